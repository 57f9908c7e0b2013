"""OpenLineage lineage of the operators, through Airflow's own OpenLineage provider (the
``openlineage`` extra): ``airflow dags test`` of the partitioned demo DAG ``ig_adult_backfill``
with the provider's file transport, and the events it wrote read back. Each task's COMPLETE event
names its datasets (the input partition, the run folder's attributions, the reference run's) and
carries the ``ig_airflow_model`` run facet with the run manifest's model version."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ig_airflow.identity import find_runs
from ig_airflow.io import read_json
from ig_airflow.layout import RunLayout
from ig_airflow.testing.airflow_local import airflow_env, dag_test, migrate
from ig_airflow.testing.demo_data import copy_demo

pytest.importorskip("airflow.providers.openlineage", reason="the openlineage extra is not installed")

DAGS = Path(__file__).resolve().parents[2] / "dags"
DAG_ID = "ig_adult_backfill"
DATES = ["2024-01-01", "2024-01-02"]  # the second one's drift compares with the first one's run
TASKS = ["validate", "compute_ig", "aggregate", "drift"]
NAMESPACE = "ig_airflow_lineage_test"


@pytest.fixture(scope="module")
def lineage(tmp_path_factory, airflow_db, demo) -> dict[str, Any]:
    """The demo's model and partitions published, then the backfill DAG run for two dates with
    the provider's file transport; returns the demo folder and the events written."""
    out = tmp_path_factory.mktemp("airflow")
    events = out / "openlineage.jsonl"
    env = airflow_env(out, DAGS)
    for name in ("OPENLINEAGE_DISABLED", "OPENLINEAGE_URL", "OPENLINEAGE_CONFIG"):
        env.pop(name, None)  # the transport is the one configured here
    env.update(
        AIRFLOW__OPENLINEAGE__DISABLED="False",
        AIRFLOW__OPENLINEAGE__NAMESPACE=NAMESPACE,
        AIRFLOW__OPENLINEAGE__TRANSPORT=json.dumps(
            {"type": "file", "log_file_path": str(events), "append": True}
        ),
    )
    migrate(env, airflow_db)
    copy_demo(demo, env["IG_AIRFLOW_DEMO_DIR"])  # what ig_adult_retrain publishes: data + model
    for ds in DATES:
        ok, log = dag_test(DAG_ID, ds, env)
        assert ok, log[-4000:]
    written = [json.loads(line) for line in events.read_text().splitlines() if line.strip()]
    return {"demo": Path(env["IG_AIRFLOW_DEMO_DIR"]), "events": written}


def run_folder(demo: Path, ds: str) -> Path:
    folders = [Path(r["uri"]) for r in find_runs(str(demo / "runs" / "backfill" / f"ds={ds}"))]
    assert len(folders) == 1, folders
    return folders[0]


def completed(events: list[dict[str, Any]], ds: str) -> dict[str, dict[str, Any]]:
    """The COMPLETE event of each ig_airflow task of the run of ``ds``, by task id."""
    found = {}
    for event in events:
        facet = event["run"]["facets"].get("ig_airflow_model")
        if event["eventType"] == "COMPLETE" and facet and facet["partition"] == f"ds={ds}":
            assert event["job"]["namespace"] == NAMESPACE
            found[event["job"]["name"].removeprefix(f"{DAG_ID}.")] = event
    assert sorted(found) == sorted(TASKS), [e["job"]["name"] for e in events]
    return found


def named(datasets: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Datasets by name, after checking each is in the local file namespace."""
    assert all(d["namespace"] == "file" for d in datasets), datasets
    return {d["name"]: d for d in datasets}


def test_each_task_reports_its_datasets_and_the_model_version(lineage) -> None:
    demo, ds = lineage["demo"], DATES[1]
    events = completed(lineage["events"], ds)
    run = run_folder(demo, ds)
    manifest = read_json(str(RunLayout(str(run)).manifest))
    artifact = str(demo / "artifacts" / "adult_torch")

    for event in events.values():  # the custom run facet: the run manifest's model and run
        facet = event["run"]["facets"]["ig_airflow_model"]
        assert facet["modelVersion"] == manifest["run"]["model_version"]
        assert facet["artifactChecksum"] == manifest["artifact"]["checksum"]
        assert facet["runId"] == manifest["run"]["run_id"] and facet["runUri"] == str(run)
        assert facet["modelUri"] == artifact and facet["framework"] == manifest["artifact"]["framework"]

    validate = events["validate"]  # the input partition, as OpenLineage's subset facet names it
    (source,) = validate["inputs"]
    assert (source["namespace"], source["name"]) == ("file", str(demo / "partitions"))
    (partition,) = source["inputFacets"]["subset"]["inputCondition"]["partitions"]
    assert partition == {"dimensions": {"ds": ds}, "identifier": f"ds={ds}"}
    validation = run / "validation"
    assert set(named(validate["outputs"])) == {str(validation / "validated"), str(validation / "quarantine")}

    ig = events["compute_ig"]  # the attributions, their columns; the model artifact and its version
    (attributions,) = ig["outputs"]
    assert attributions["name"] == str(run / "attributions") == manifest["outputs"]["attributions"]
    columns = [f["name"] for f in attributions["facets"]["schema"]["fields"]]
    assert columns[0] == "row_id" and "attr__age" in columns and "completeness_error" in columns
    inputs = named(ig["inputs"])
    assert set(inputs) == {str(run / "validation" / "validated"), artifact}
    assert inputs[artifact]["facets"]["version"]["datasetVersion"] == manifest["run"]["model_version"]
    facet = ig["run"]["facets"]["ig_airflow_model"]
    assert facet["rowsExplained"] == manifest["rows"]["explained"] > 0 and facet["rowsQuarantined"] == 0
    assert 0.9 <= facet["convergedShare"] <= 1

    assert str(run / "attributions") in named(events["aggregate"]["inputs"])
    assert set(named(events["aggregate"]["outputs"])) == {str(run / "summary")}

    drift = events["drift"]  # compared with the previous partition's run
    previous = run_folder(demo, DATES[0])
    assert set(named(drift["inputs"])) == {str(run / "attributions"), str(previous / "attributions")}
    history = str(demo / "runs" / "backfill" / "history.parquet")
    assert set(named(drift["outputs"])) == {str(run / "drift" / "drift.json"), history}


def test_the_first_partition_has_no_reference_run(lineage) -> None:
    events = completed(lineage["events"], DATES[0])
    run = run_folder(lineage["demo"], DATES[0])
    assert set(named(events["drift"]["inputs"])) == {str(run / "attributions")}
    (source,) = events["validate"]["inputs"]
    assert source["inputFacets"]["subset"]["inputCondition"]["partitions"][0]["identifier"] == "ds=2024-01-01"
