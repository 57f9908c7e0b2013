"""The operators are thin: they read the config with Airflow's context and call the library;
errors that no retry can fix fail the task at once."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ig_airflow.operators import LoadModelArtifactOperator, ValidateInputsOperator


def test_deterministic_errors_fail_the_task_without_retries(tmp_path: Path) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"model": {"uri": str(tmp_path / "missing")}, "data": {}, "output": {}}))
    operator = ValidateInputsOperator(task_id="validate", config_path=str(config), retries=3)
    with pytest.raises(
        AirflowFailException, match=r"(?s)ConfigError: .*data.input_uri: required key is missing"
    ):
        operator.execute(context={})


def test_artifact_task_reports_the_artifact(demo) -> None:
    config = yaml.safe_load(Path(demo["config"]).read_text())
    path = Path(demo["config"]).with_name("artifact_task.yaml")
    path.write_text(yaml.safe_dump(config))
    result = LoadModelArtifactOperator(task_id="load", config_path=str(path)).execute(
        context={"ds": "2024-01-01"}
    )
    assert (
        result["framework"] == "pytorch"
        and result["features"] == 14
        and len(result["artifact_checksum"]) == 64
    )
