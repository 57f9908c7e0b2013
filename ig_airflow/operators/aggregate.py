"""Feature- and category-level attribution summaries."""

from __future__ import annotations

from typing import Any

from ig_airflow.operators.base import IGStageOperator


class AggregateAttributionsOperator(IGStageOperator):
    """Summarise ``<output.uri>/attributions.parquet`` into ``<output.uri>/summary/``:
    per-feature global importance and per category value (joined with the validated rows).

    Example::

        aggregate = AggregateAttributionsOperator(task_id="aggregate", config_path="configs/run.yaml")
    """

    def execute(self, context: Any) -> dict[str, Any]:
        from ig_airflow.analysis.aggregation import summarise_run
        from ig_airflow.artifacts import read_metadata
        from ig_airflow.layout import RunLayout

        config = self.run_config(context)
        layout = RunLayout.of(config)
        spec = read_metadata(config.model.uri).inputs
        inputs = layout.validation.validated if config.validation.enabled else config.data.input_uri
        return summarise_run(
            layout.attributions,
            layout.summary.root,
            inputs_uri=inputs,
            categorical=spec.categorical_names,
            id_columns=config.data.id_columns,
        )
