"""The stages chained in one process (the CLI's ``run`` and notebooks): validate, then explain.
The Airflow DAGs run the same library calls as separate tasks."""

from __future__ import annotations

from typing import Any

from ig_airflow.config import RunConfig
from ig_airflow.io import write_json
from ig_airflow.layout import RunLayout
from ig_airflow.validation import run_validation


def validated_config(config: RunConfig, validated_uri: str | None = None) -> RunConfig:
    """The run config with the validated rows (default: where validation writes them) as the IG input."""
    uri = validated_uri or RunLayout.of(config).validation.validated
    return config.model_copy(update={"data": config.data.model_copy(update={"input_uri": uri})})


def run_ig(config: RunConfig) -> dict[str, Any]:
    """The IG stage: on Ray when ``ray.enabled`` (the default), else in this process."""
    if config.ray.enabled:
        from ig_airflow.run.ray_runner import run_explain_ray

        return run_explain_ray(config)
    from ig_airflow.run.local import run_explain

    return run_explain(config)


def run_pipeline(config: RunConfig) -> dict[str, Any]:
    """Validate the input (when ``validation.enabled``), explain the validated rows, and put the
    validation counts into the run manifest. Returns the manifest."""
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
    write_json(RunLayout.of(config).manifest, manifest)
    return manifest
