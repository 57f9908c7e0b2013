"""The quality stage: can the run's explanations be trusted?"""

from __future__ import annotations

from typing import Any

from ig_airflow.operators.base import IGStageOperator
from ig_airflow.operators.links import ExplanationPageLink, ReportLink


class AssessQualityOperator(IGStageOperator):
    """Measure the run's explanations on a sample of its rows (``quality`` in the config):
    deletion/insertion curves against a random and a permutation-importance order, infidelity,
    max-sensitivity and the model-randomisation check; writes ``<output.uri>/quality/quality.json``.
    A failed check fails the task with ``quality.on_fail: fail`` (no retry), else it is logged;
    either way the events of its Asset outlets carry the results (``passed``, the AUCs).

    Example::

        quality = AssessQualityOperator(
            task_id="quality", config_path="configs/run.yaml",
            outlets=[Asset("ig_airflow.adult.quality", uri="file:///data/ig/runs")],
        )
    """

    operator_extra_links = (ExplanationPageLink(), ReportLink())

    def run_stage(self, context: Any) -> dict[str, Any]:
        from ig_airflow.exceptions import QualityCheckFailed
        from ig_airflow.layout import RunLayout
        from ig_airflow.pipeline import run_quality

        config = self.run_config(context)
        try:
            result = run_quality(config)
        except QualityCheckFailed:
            from ig_airflow.io import read_json

            self.annotate_outlets(context, quality_extra(read_json(RunLayout.of(config).quality.json)))
            raise
        self.annotate_outlets(context, quality_extra(result))
        return {"quality": RunLayout.of(config).quality.json, **quality_extra(result)}


def quality_extra(result: dict[str, Any]) -> dict[str, Any]:
    """What the quality stage's asset event (and XCom) carries."""
    randomisation = result.get("randomisation") or {}
    return {
        **(result.get("run") or {}),
        "passed": result["passed"],
        "failed_checks": [c["name"] for c in result["checks"] if not c["passed"]],
        "deletion_auc": result["deletion"]["auc"],
        "insertion_auc": result["insertion"]["auc"],
        "infidelity": result["infidelity"]["mean"],
        "max_sensitivity": result["max_sensitivity"]["mean"],
        "randomised_spearman": randomisation.get("row_spearman_mean"),
        "rows": result["rows"],
    }
