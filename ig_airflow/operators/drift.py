"""Global attribution drift with thresholds and alerts."""

from __future__ import annotations

from typing import Any

from ig_airflow.operators.base import IGStageOperator, context_vars
from ig_airflow.operators.links import DriftHistoryLink, ExplanationPageLink, ReportLink


class SummariseDriftOperator(IGStageOperator):
    """Compare this run's attributions with ``drift.reference_uri`` (another model version,
    another period, or ``previous``: the latest earlier run in the history table), append the
    run to the history table, and write ``<output.uri>/drift/drift.json``. Alerts are logged
    as ``DRIFT ALERT``; with ``drift.on_alert: fail`` the task fails. Writes the HTML report
    with its plots to ``<output.uri>/report/``. The returned XCom has ``alert`` (bool) for a
    downstream branch.

    Example::

        drift = SummariseDriftOperator(task_id="drift", config_path="configs/run.yaml",
                                       overrides={"drift": {"on_alert": "fail"}})
    """

    operator_extra_links = (ExplanationPageLink(), ReportLink(), DriftHistoryLink())

    def run_stage(self, context: Any) -> dict[str, Any]:
        from ig_airflow.io import exists, read_json
        from ig_airflow.layout import RunLayout
        from ig_airflow.pipeline import run_drift

        config = self.run_config(context)
        run_key = config.drift.run_key or context_vars(context).get("ds") or config.output.partition
        result, report = run_drift(config, run_key)
        self.log.info("report: %s", report)
        summary = RunLayout.of(config).summary.json
        alerts = [f"{a['metric']}:{','.join(a['features'])}" for a in result["alerts"]]
        model_share = (result.get("decomposition") or {}).get("model_share")  # of the change
        self.annotate_outlets(
            context,
            {
                "model_version": result.get("model_version"),
                "run_id": result.get("run_id"),
                "run_key": run_key,
                "alert": bool(result["alerts"]),
                "alerts": alerts,
                "ndcg_at_k": result.get("ndcg_at_k"),
                "model_share_of_change": model_share,
                "reference": result.get("reference"),
                "top_features": read_json(summary).get("top_features") if exists(summary) else None,
                "report": report,
            },
        )
        return {
            "report": report,
            "alert": bool(result["alerts"]),
            "alerts": alerts,
            "ndcg_at_k": result.get("ndcg_at_k"),
            "model_share_of_change": model_share,
            "drift": RunLayout.of(config).drift.json,
            "run_key": run_key,
            "run": {k: result.get(k) for k in ("model_version", "run_id")},
            "reference": result.get("reference"),
        }
