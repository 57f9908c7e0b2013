"""Feature- and category-level attribution summaries."""

from __future__ import annotations

from typing import Any

from ig_airflow.operators.base import IGStageOperator


class AggregateAttributionsOperator(IGStageOperator):
    """Summarise ``<output.uri>/attributions/`` into ``<output.uri>/summary/``:
    per-feature global importance and per category value (joined with the validated rows).

    Example::

        aggregate = AggregateAttributionsOperator(task_id="aggregate", config_path="configs/run.yaml")
    """

    def run_stage(self, context: Any) -> dict[str, Any]:
        from ig_airflow.pipeline import run_aggregation

        return run_aggregation(self.run_config(context))
