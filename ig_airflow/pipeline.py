"""The stages of a run, each a call on the run config: validation, IG, aggregation, quality,
drift with the report. The Airflow operators call them one per task; :func:`run_pipeline` chains validation
and IG in one process (the CLI's ``run`` and notebooks). Each holds the run folder's lease."""

from __future__ import annotations

from typing import Any

from ig_airflow.config import RunConfig
from ig_airflow.identity import partition_name, resolve_run, run_identity
from ig_airflow.io import write_json
from ig_airflow.layout import RunLayout
from ig_airflow.lease import run_lease
from ig_airflow.validation import run_validation


def validated_config(config: RunConfig, validated_uri: str | None = None) -> RunConfig:
    """The run config with the validated rows (default: where validation writes them) as the IG input."""
    uri = validated_uri or RunLayout.of(config).validation.validated
    data = config.data.model_copy(update={"input_uri": uri, "partition": {}})  # already selected
    return config.model_copy(update={"data": data})


def run_ig(config: RunConfig) -> dict[str, Any]:
    """The IG stage: on Ray when ``ray.enabled`` (the default), else in this process."""
    config = resolve_run(config)
    if config.ray.enabled:
        from ig_airflow.run.ray_runner import run_explain_ray

        return run_explain_ray(config)
    from ig_airflow.run.local import run_explain

    return run_explain(config)


def run_pipeline(config: RunConfig, run_key: str | None = None) -> dict[str, Any]:
    """The whole pipeline in this process, as the explain DAG runs it task by task: validation
    (when ``validation.enabled``), IG on the validated rows, aggregation, the quality stage (when
    ``quality.enabled``), then drift against the
    configured reference with the history table and the HTML report. Holds the run folder's
    lease throughout; returns the run manifest, with the validation counts, the summary and the
    drift alerts. ``run_key`` names the run's partition in the history table (default:
    ``drift.run_key``, else the run's partition)."""
    config = resolve_run(config)
    layout = RunLayout.of(config)
    with run_lease(layout):
        manifest = _validate_and_explain(config)
        summary = run_aggregation(config)
        manifest["summary"] = {"top_features": summary["top_features"], "outputs": summary["outputs"]}
        write_json(layout.manifest, manifest)
        if config.quality.enabled:
            quality = run_quality(config)
            manifest["quality"] = {"passed": quality["passed"], "checks": quality["checks"]}
            write_json(layout.manifest, manifest)
        drift, report = run_drift(config, config.drift.run_key or run_key or str(config.output.partition))
        manifest["drift"] = {"alerts": drift["alerts"], "reference": drift.get("reference"), "report": report}
        write_json(layout.manifest, manifest)
    return manifest


def _validate_and_explain(config: RunConfig) -> dict[str, Any]:
    if not config.validation.enabled:
        return run_ig(config)
    report = run_validation(config)
    manifest = run_ig(validated_config(config, report["outputs"]["validated"]))
    manifest["input_uri"] = config.data.input_uri
    manifest["validation"] = {
        "rows": report["rows"],
        "mapped": report["mapped"],
        "outputs": report["outputs"],
    }
    return manifest


def run_aggregation(config: RunConfig) -> dict[str, Any]:
    """Summarise the run's attributions into ``summary/`` (features with bootstrap intervals,
    categories, cohorts, layer units, loss importance)."""
    from ig_airflow.analysis.aggregation import summarise_run
    from ig_airflow.analysis.cohorts import summarise_cohorts
    from ig_airflow.analysis.loss import summarise_loss
    from ig_airflow.artifacts import read_metadata
    from ig_airflow.dataset import open_dataset

    config = resolve_run(config)
    layout = RunLayout.of(config)
    spec = read_metadata(config.model.uri).inputs
    inputs = layout.validation.validated if config.validation.enabled else config.data.input_uri
    partition = {} if config.validation.enabled else config.data.partition
    statistics = {"resamples": config.drift.resamples, "seed": config.drift.seed}
    with run_lease(layout):
        result = summarise_run(
            layout.attributions,
            layout.summary.root,
            inputs_uri=inputs,
            categorical=spec.categorical_names,
            id_columns=config.data.id_columns,
            inputs_partition=partition,
            **statistics,
        )
        if config.cohorts:
            explained = open_dataset(inputs, partition)
            result = summarise_cohorts(
                layout.attributions, layout.summary.root, explained, config.cohorts, **statistics
            )
        loss = summarise_loss(layout.attributions, layout.summary.root)  # runs with ig.loss
        if loss is not None:
            result["loss"] = loss
            result["outputs"]["loss_summary"] = layout.summary.table("loss")
        return result


def run_quality(config: RunConfig) -> dict[str, Any]:
    """The quality stage on a sample of the run's explained rows (``quality``): faithfulness,
    stability and the model-randomisation check in ``quality/quality.json``
    (:func:`ig_airflow.quality.stage.assess_quality`)."""
    from ig_airflow.quality.stage import assess_quality

    config = resolve_run(config)
    with run_lease(RunLayout.of(config)):
        return assess_quality(config)


def run_drift(config: RunConfig, run_key: str | None = None) -> tuple[dict[str, Any], str]:
    """Drift against the configured reference, the history table (one record per run: its
    partition key ``run_key``, default the run's partition, its model version and run id), then
    the HTML report (also when ``on_alert: fail`` raises, so that the report shows the alerts).
    Against a reference of another model version, a sample of each run's rows is explained by the
    other's model to split the change into model and data parts (``drift.decomposition``).
    Returns the drift result and the report's URI."""
    from functools import partial

    from ig_airflow.analysis.drift import summarise_drift
    from ig_airflow.analysis.report import build_report
    from ig_airflow.quality.cross_terms import cross_terms

    config = resolve_run(config)
    identity = run_identity(config)
    run = {"run_key": run_key or identity.partition, **identity.to_dict()}
    layout = RunLayout.of(config)
    with run_lease(layout):
        try:
            previous = _previous_partition(config)
            result = summarise_drift(
                layout.attributions,
                layout.drift.root,
                config.drift,
                run,
                previous,
                config.cohorts,
                cross_terms=partial(cross_terms, config),
            )
        finally:
            report = build_report(
                config.output.uri,
                config.data.id_columns,
                config.drift.history_uri,
                waterfall_rows=config.drift.waterfall_rows,
                waterfall_ids=config.drift.waterfall_ids,
                validation_uri=layout.validation.root if config.validation.enabled else None,
            )
    return result, report


def _previous_partition(config: RunConfig) -> str | None:
    """The input partition before the run's, named as a run's partition is (``ds=2024-01-02``),
    when the drift reference waits for its run."""
    if not (config.data.partition and config.drift.wait_for_reference_s):
        return None
    from ig_airflow.dataset import previous_partition

    previous = previous_partition(config.data.input_uri, config.data.partition)
    return partition_name(previous) if previous else None
