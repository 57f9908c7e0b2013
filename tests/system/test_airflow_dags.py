"""The example DAGs run for real: ``airflow dags test`` against a SQLite metadata DB, an
embedded local Ray and real Great Expectations, in subprocesses as a user would run them."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from ig_airflow.identity import find_runs
from ig_airflow.testing.airflow_local import airflow_env, dag_test, migrate, run_airflow
from ig_airflow.testing.demo_data import copy_demo
from ig_airflow.testing.faults import fault_env
from ig_airflow.testing.outputs import dataset_bytes

DAGS = Path(__file__).resolve().parents[2] / "dags"  # the repository's example DAGs
DAG_IDS = {"ig_adult_retrain", "ig_adult_explain", "ig_adult_compare_models", "ig_adult_backfill"}
# ig_adult_compare_models runs in a running Airflow: tests/system/test_model_approval.py


@pytest.fixture(scope="module")
def env(tmp_path_factory, airflow_db, demo) -> dict[str, str]:
    out = tmp_path_factory.mktemp("airflow")
    env = airflow_env(out, DAGS)
    migrate(env, airflow_db)
    # what ig_adult_retrain publishes (data + model; the DAG itself runs in the retrain test)
    copy_demo(demo, env["IG_AIRFLOW_DEMO_DIR"])
    return env


def json_output(stdout: str):
    """The JSON document of an ``--output json`` command (Airflow logs warnings around it)."""
    lines = [line for line in stdout.splitlines() if line.startswith(("[", "{"))]
    return json.loads(lines[-1])


def demo_dir(env: dict[str, str]) -> Path:
    return Path(env["IG_AIRFLOW_DEMO_DIR"])


def run_folders(root: Path, ds: str) -> list[Path]:
    """The run folders of one date (``ds=<ds>/model=<version>/run=<run id>``), oldest first."""
    return [Path(r["uri"]) for r in find_runs(str(root / f"ds={ds}"))]


def only_run(root: Path, ds: str) -> Path:
    folders = run_folders(root, ds)
    assert len(folders) == 1, folders
    return folders[0]


def test_provider_is_listed_and_dags_import_without_errors(env) -> None:
    providers = run_airflow(["providers", "list"], env)
    assert "ig-airflow" in providers.stdout
    assert run_airflow(["dags", "reserialize"], env).returncode == 0
    errors = run_airflow(["dags", "list-import-errors", "--output", "json"], env)
    assert errors.returncode == 0 and json_output(errors.stdout) == []
    listed = run_airflow(["dags", "list", "--output", "json"], env)
    assert {d["dag_id"] for d in json_output(listed.stdout)} >= DAG_IDS


def test_explain_pipeline_runs_every_stage(env) -> None:
    ok, log = dag_test("ig_adult_explain", "2024-01-08", env)
    assert ok, log[-4000:]
    run = only_run(demo_dir(env) / "runs" / "explain", "2024-01-08")
    assert run.parent.name.startswith("model=") and run.name.startswith("run=manual__")  # dags test's run id
    for name in (
        "attributions",
        "manifest.json",
        "validation/validated",
        "validation/quarantine",
        "validation/gx_result.json",
        "summary/feature_summary.parquet",
        "summary/category_summary.parquet",
        "summary/layer_summary.parquet",  # the config asks for layer attributions at mlp.1
        "drift/drift.json",
        "quality/quality.json",
    ):
        assert (run / name).exists(), name
    quality = json.loads((run / "quality" / "quality.json").read_text())
    assert quality["passed"] and quality["deletion"]["auc"]["ig"] < quality["deletion"]["auc"]["random"]
    assert "Quality of the explanations" in (run / "report" / "report.html").read_text()
    assert not (run / "validation" / "data_docs").exists()  # GX Data Docs are opt-in (SECURITY.md)
    assert json.loads((run / "summary" / "summary.json").read_text())["layers"] == {"mlp.1": 64}
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["runner"] == "ray" and manifest["rows"]["explained"] == 16281
    assert manifest["completeness"]["mean_error"] <= 0.01
    assert (demo_dir(env) / "runs" / "explain" / "history.parquet").exists()


def test_ig_task_fails_once_is_retried_by_airflow_and_output_matches(env, tmp_path) -> None:
    explain = demo_dir(env) / "runs" / "explain"
    if not run_folders(explain, "2024-01-08"):
        assert dag_test("ig_adult_explain", "2024-01-08", env)[0]
    undisturbed = only_run(explain, "2024-01-08") / "attributions"
    marker = tmp_path / "failed_once"
    faulty = {**env, **fault_env(f"fail_run:after_shards=1:once={marker}")}
    ok, log = dag_test("ig_adult_explain", "2024-01-09", faulty)
    assert ok, log[-4000:]
    assert marker.exists() and "injected failure after 1 shards" in log
    assert "up_for_retry" in log
    plans = re.findall(r"2 shards of \d+ rows: (\d) already done for these hashes", log)
    # the retry resumed: it reused the shard finished before the failure (the other shard's worker
    # may also have finished its shard before it was stopped)
    assert plans[0] == "0" and int(plans[-1]) >= 1, plans
    retried = pd.read_parquet(only_run(explain, "2024-01-09") / "attributions")
    pd.testing.assert_frame_equal(retried, pd.read_parquet(undisturbed))


def test_backfill_three_dates_is_idempotent(env) -> None:
    dates = ["2024-01-01", "2024-01-02", "2024-01-03"]
    for ds in dates:
        ok, log = dag_test("ig_adult_backfill", ds, env)
        assert ok, log[-4000:]
    root = demo_dir(env) / "runs" / "backfill"
    runs = {ds: only_run(root, ds) for ds in dates}  # one run folder per date
    for ds in dates:
        explained = pd.read_parquet(runs[ds] / "attributions")
        source = pd.read_parquet(demo_dir(env) / "partitions" / f"ds={ds}" / "rows.parquet")
        assert sorted(explained.row_id) == sorted(source.row_id)
    history = pd.read_parquet(root / "history.parquet")
    assert sorted(history.run_key.unique()) == dates
    drift = json.loads((runs["2024-01-03"] / "drift" / "drift.json").read_text())
    assert drift["reference"] == str(runs["2024-01-02"] / "attributions")  # drift over time

    files = [
        runs["2024-01-02"] / "attributions",
        runs["2024-01-02"] / "validation" / "validated",
        runs["2024-01-02"] / "summary" / "feature_summary.parquet",
    ]
    before = {f: dataset_bytes(f) for f in files}
    ok, log = dag_test("ig_adult_backfill", "2024-01-02", env)  # another DAG run of the same date
    assert ok, log[-4000:]
    again = run_folders(root, "2024-01-02")
    assert len(again) == 2 and again[0] == runs["2024-01-02"]  # its own folder; the first untouched
    assert {f: dataset_bytes(f) for f in files} == before
    assert dataset_bytes(again[1] / "attributions") == before[files[0]]  # the same result
    history = pd.read_parquet(root / "history.parquet")
    assert len(history.drop_duplicates(["run_key", "model_version", "run_id"])) == 4  # one record per run


def test_a_retrain_on_the_same_day_adds_a_run_and_drift_between_model_versions(env, tmp_path) -> None:
    """The nightly run, then a retrain (another model version) whose asset triggers an explain
    run on the same day: two run folders, two history records, drift between the versions."""
    explain = demo_dir(env) / "runs" / "explain"
    if not run_folders(explain, "2024-01-08"):
        assert dag_test("ig_adult_explain", "2024-01-08", env)[0]
    nightly = only_run(explain, "2024-01-08")
    before = dataset_bytes(nightly / "attributions")
    artifact, default = demo_dir(env) / "artifacts" / "adult_torch", tmp_path / "adult_torch"
    shutil.copytree(artifact, default)
    retrained = {**env, "IG_AIRFLOW_DEMO_SEED": "1"}  # the retrain learns another model version
    assert dag_test("ig_adult_retrain", "2024-01-08", retrained)[0]
    ok, log = dag_test("ig_adult_explain", "2024-01-08", retrained)
    assert ok, log[-4000:]
    folders = run_folders(explain, "2024-01-08")
    assert len(folders) == 2 and folders[0] == nightly
    assert dataset_bytes(nightly / "attributions") == before  # the nightly run is untouched
    after = folders[1]
    assert after.parent.name != nightly.parent.name  # another model version
    history = pd.read_parquet(explain / "history.parquet")
    day = history[history.run_key == "2024-01-08"].drop_duplicates(["model_version", "run_id"])
    assert len(day) == 2 and day.model_version.nunique() == 2
    drift = json.loads((after / "drift" / "drift.json").read_text())
    assert drift["reference_choice"] == "auto"
    assert drift["reference"] == str(nightly / "attributions")  # the previous model version
    assert 0 <= drift["ndcg_at_k"] <= 1
    shutil.rmtree(artifact)  # leave the default model for the other tests (the same bytes)
    shutil.copytree(default, artifact)
