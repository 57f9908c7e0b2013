"""Compute Integrated Gradients (on Ray by default)."""

from __future__ import annotations

from typing import Any

from ig_airflow.operators.base import IGStageOperator


class ComputeAttributionsOperator(IGStageOperator):
    """Explain the validated rows (or ``data.input_uri`` when validation is disabled) on Ray
    (embedded local Ray, or ``RAY_ADDRESS``), resuming finished shards on a retry. Pushes the
    attributions URI, row and shard counts; sets the extra of its Asset outlets.

    Example::

        ig = ComputeAttributionsOperator(
            task_id="compute_ig", config_path="configs/run.yaml", retries=2,
            outlets=[Asset("ig_airflow.adult.attributions", uri="file:///data/ig/runs")],
        )
    """

    def run_stage(self, context: Any) -> dict[str, Any]:
        from ig_airflow.pipeline import run_ig, validated_config

        config = self.run_config(context)
        if config.validation.enabled:
            config = validated_config(config)
        manifest = run_ig(config)
        result = {
            "attributions": manifest["outputs"]["attributions"],
            "rows": manifest["rows"]["explained"],
            "shards": manifest.get("shards"),
            "mean_completeness_error": manifest["completeness"].get("mean_error"),
            "config_hash": manifest["config_hash"],
        }
        for outlet in self.outlets or []:
            if hasattr(outlet, "uri") and context.get("outlet_events") is not None:
                context["outlet_events"][outlet].extra = {
                    "attributions": result["attributions"],
                    "rows": result["rows"],
                }
        return result
