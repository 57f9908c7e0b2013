"""Compute Integrated Gradients (on Ray by default)."""

from __future__ import annotations

from typing import Any

from ig_airflow.operators.base import IGStageOperator
from ig_airflow.operators.links import ExplanationPageLink, RowExplanationLink


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

    operator_extra_links = (ExplanationPageLink(), RowExplanationLink())

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
        self.annotate_outlets(context, event_extra(config, manifest))
        return result


def event_extra(config: Any, manifest: dict[str, Any]) -> dict[str, Any]:
    """What the IG stage's asset event carries: the run, its rows (explained and quarantined),
    the share of rows whose completeness converged, and where the attributions are."""
    from ig_airflow.io import exists, read_json
    from ig_airflow.layout import RunLayout

    report = RunLayout.of(config).validation.report
    quarantined = (
        (read_json(report)["rows"]["quarantined"] if exists(report) else 0)
        if config.validation.enabled
        else 0
    )
    rows = manifest["rows"]["explained"]
    unconverged = manifest["completeness"].get("unconverged_rows", 0)
    return {
        **manifest["run"],
        "attributions": manifest["outputs"]["attributions"],
        "rows_explained": rows,
        "rows_quarantined": quarantined,
        "converged_share": round(1 - unconverged / rows, 4) if rows else None,
        "mean_completeness_error": manifest["completeness"].get("mean_error"),
    }
