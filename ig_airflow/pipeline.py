"""Validate then explain, in one process (the CLI's ``run`` and notebooks). The Airflow DAGs
run the same library calls as separate tasks."""

from __future__ import annotations

from typing import Any

from ig_airflow.config import RunConfig
from ig_airflow.explain import run_explain
from ig_airflow.io import join_uri, write_json
from ig_airflow.validation import run_validation


def validated_config(config: RunConfig, validated_uri: str) -> RunConfig:
    """The run config with the validated rows as the IG input."""
    return config.model_copy(update={"data": config.data.model_copy(update={"input_uri": validated_uri})})


def run_ig(config: RunConfig) -> dict[str, Any]:
    """The IG stage: on Ray when ``ray.enabled`` (the default), else in this process."""
    if config.ray.enabled:
        from ig_airflow.distributed import run_explain_ray

        return run_explain_ray(config)
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
    write_json(join_uri(config.output.uri, "manifest.json"), manifest)
    return manifest
