"""OpenLineage is optional: without the provider the operators import and run as before, and
with it each operator reports its datasets (``ig_airflow.operators.lineage``; the events of a
whole DAG run are in tests/system/test_openlineage.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ig_airflow.operators.lineage import dataset_name

# the OpenLineage client not importable, as without the extra: no module of the provider that
# reports lineage imports then (Airflow still lists the provider's metadata, installed here)
WITHOUT_PROVIDER = """
import sys
sys.modules["openlineage"] = None  # "import openlineage..." raises ImportError
"""


def run_python(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON document."""
    env = {**os.environ, "IG_AIRFLOW_TRUSTED_MODULES": "ig_airflow.demo"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_the_operators_imports_no_openlineage() -> None:
    loaded = run_python(
        "import json, sys\n"
        "import ig_airflow.operators\n"
        "from ig_airflow.operators import ComputeAttributionsOperator\n"
        "ComputeAttributionsOperator(task_id='ig', config_path='run.yaml')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'openlineage'"
        " or m == 'ig_airflow.operators.lineage')))\n"
    )
    assert loaded == []


def test_operators_run_without_the_provider(demo, tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(Path(demo["config"]).read_text())
    result = run_python(
        WITHOUT_PROVIDER + "import json\n"
        "from ig_airflow.operators import LoadModelArtifactOperator\n"
        f"task = LoadModelArtifactOperator(task_id='load', config_path={str(config)!r})\n"
        "result = task.execute(context={'ds': '2024-01-01'})\n"
        "print(json.dumps({**result, 'lineage': task.get_openlineage_facets_on_complete(None)}))\n"
    )
    assert result["framework"] == "pytorch" and len(result["artifact_checksum"]) == 64
    assert result["lineage"] is None  # nothing to report to


def test_the_artifact_task_reports_the_model_and_its_version(demo, tmp_path: Path) -> None:
    pytest.importorskip("airflow.providers.openlineage")
    from ig_airflow.identity import run_identity
    from ig_airflow.operators import LoadModelArtifactOperator

    config = tmp_path / "run.yaml"
    config.write_text(Path(demo["config"]).read_text())
    task = LoadModelArtifactOperator(task_id="load", config_path=str(config))
    assert task.get_openlineage_facets_on_complete(None) is None  # not run: nothing resolved
    task.execute(context={"ds": "2024-01-01", "run_id": "manual__1"})
    lineage = task.get_openlineage_facets_on_complete(None)

    version = run_identity(task.resolved_config).model_version
    (model,) = lineage.inputs
    artifact = yaml.safe_load(config.read_text())["model"]["uri"]
    assert (model.namespace, model.name, lineage.outputs) == ("file", artifact, [])
    assert model.facets["version"].datasetVersion == version
    facet = lineage.run_facets["ig_airflow_model"]
    assert (facet.modelVersion, facet.runId, facet.framework) == (version, "manual__1", "pytorch")
    assert facet.artifactChecksum.startswith(version) and facet.rowsExplained is None  # not explained yet


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("/data/in.parquet", ("file", "/data/in.parquet")),
        ("file:///data/in", ("file", "/data/in")),
        ("file://host/data/in", ("file://host", "/data/in")),
        ("s3://bucket/lake/rows", ("s3://bucket", "lake/rows")),
        ("s3a://bucket/lake/rows", ("s3://bucket", "lake/rows")),
        ("gcs://bucket/lake/rows", ("gs://bucket", "lake/rows")),
        ("hdfs://namenode:8020/lake/rows", ("hdfs://namenode:8020", "lake/rows")),
    ],
)
def test_datasets_are_named_as_openlineage_names_them(uri: str, expected: tuple[str, str]) -> None:
    assert dataset_name(uri) == expected


def test_a_relative_path_is_named_by_its_absolute_path(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert dataset_name("runs/x") == ("file", str(tmp_path / "runs" / "x"))
