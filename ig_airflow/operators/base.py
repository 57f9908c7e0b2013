"""What every ig_airflow operator shares: reading the run config with Airflow's context."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from ig_airflow.config import RunConfig, parse_run_config, read_config_mapping
from ig_airflow.exceptions import DETERMINISTIC_ERRORS
from ig_airflow.operators.links import ExplanationPageLink
from ig_airflow.trust import AIRFLOW_TRUSTED_MODULES_ENV

RUN_FOLDER_XCOM_KEY = "ig_airflow_run"


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def context_vars(context: Any) -> dict[str, Any]:
    """Placeholder values from the task context: ``ds``, ``ds_nodash``, ``partition_key``,
    ``run_id``, ``dag_id``. Runs with no logical date (partitioned or asset-triggered) take ``ds``
    from the run's partition date, else its ``run_after`` date; ``partition_key`` is the run's
    partition key (Airflow asset partitions), else ``ds``."""
    values: dict[str, Any] = {}
    dag_run = context.get("dag_run")
    ds = context.get("ds")
    if not ds and dag_run is not None:
        when = getattr(dag_run, "partition_date", None) or getattr(dag_run, "run_after", None)
        ds = when.date().isoformat() if when else None
    if ds:
        values.update(ds=ds, ds_nodash=ds.replace("-", ""))
    partition_key = context.get("partition_key") or getattr(dag_run, "partition_key", None) or ds
    if partition_key:
        values["partition_key"] = str(partition_key)
    if context.get("run_id"):
        values["run_id"] = context["run_id"]
    if context.get("dag") is not None:
        values["dag_id"] = context["dag"].dag_id
    return values


def export_deployment_settings() -> None:
    """Make Airflow's ``[ig_airflow] trusted_modules`` (airflow.cfg or its environment variable)
    visible to the library and the Ray workers, which read the environment (SECURITY.md)."""
    from airflow.sdk import conf

    trusted = conf.get("ig_airflow", "trusted_modules", fallback="")
    if trusted:
        os.environ[AIRFLOW_TRUSTED_MODULES_ENV] = trusted


class IGStageOperator(BaseOperator):
    """Base of the stage operators.

    Args:
        config_path: the run config YAML (templated).
        template_vars: values for ``{{ name }}`` placeholders in the config, on top of the
            context's ``ds``, ``ds_nodash``, ``partition_key``, ``run_id`` and ``dag_id`` (templated).
        overrides: a mapping deep-merged into the config before validation, e.g.
            ``{"model": {"uri": "..."}}`` (templated).
    """

    template_fields: Sequence[str] = ("config_path", "template_vars", "overrides")
    ui_color = "#e8f4ea"
    operator_extra_links = (ExplanationPageLink(),)

    def __init__(
        self,
        *,
        config_path: str,
        template_vars: dict[str, Any] | None = None,
        overrides: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.config_path = config_path
        self.template_vars = template_vars or {}
        self.overrides = overrides or {}

    def execute(self, context: Any) -> Any:
        """Run the stage; errors that no retry can fix (bad config, artifact or data, a model that
        cannot run) fail the task at once instead of spending its retries."""
        from airflow.sdk.exceptions import AirflowFailException

        try:
            return self.run_stage(context)
        except DETERMINISTIC_ERRORS as exc:
            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc

    def run_stage(self, context: Any) -> Any:
        """The stage's work; returns the XCom value."""
        raise NotImplementedError

    def annotate_outlets(self, context: Any, extra: dict[str, Any]) -> None:
        """Attach ``extra`` to the events of this task's Asset outlets: shown with the event in
        the Airflow UI, and read by downstream DAGs through ``triggering_asset_events``."""
        self.outlet_extra = extra  # also in the task's OpenLineage run facet
        events = context.get("outlet_events")
        for outlet in self.outlets or [] if events is not None else []:
            if hasattr(outlet, "uri"):
                events[outlet].extra = extra

    def run_config(self, context: Any) -> RunConfig:
        """The run config rendered with the context, its run id the Airflow run's (unless the
        config sets one), placed in the run's own folder (:func:`ig_airflow.identity.resolve_run`)."""
        from ig_airflow.identity import resolve_run

        export_deployment_settings()
        raw = read_config_mapping(self.config_path)
        values = {**context_vars(context), **self.template_vars}
        if "run_id" in values and "run_id" not in (raw.get("output") or {}):
            raw = deep_merge(raw, {"output": {"run_id": str(values["run_id"])}})
        config = resolve_run(parse_run_config(deep_merge(raw, self.overrides), self.config_path, values))
        self.record_run_folder(context, config)
        self.resolved_config = config  # what the task's OpenLineage events report
        return config

    def record_run_folder(self, context: Any, config: RunConfig) -> None:
        """Push the run folder as the XCom :data:`RUN_FOLDER_XCOM_KEY`: how the ig_airflow views
        (``ig_airflow.ui``) find a DAG run's explanations, from Airflow's own records."""
        ti = context.get("ti")
        if ti is not None:
            ti.xcom_push(
                key=RUN_FOLDER_XCOM_KEY, value={"run_uri": config.output.uri, "task_id": self.task_id}
            )

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """The stage's OpenLineage lineage, asked by Airflow's OpenLineage provider when installed
        (also for a failed task): its input and output datasets and the ``ig_airflow_model`` run
        facet (:mod:`ig_airflow.operators.lineage`)."""
        from ig_airflow.operators.lineage import operator_lineage

        return operator_lineage(self, task_instance)
