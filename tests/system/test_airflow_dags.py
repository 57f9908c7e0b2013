"""The example DAGs run for real: ``airflow dags test`` against a SQLite metadata DB, an
embedded local Ray and real Great Expectations, in subprocesses as a user would run them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from ig_airflow.testing.airflow_local import airflow_env, dag_test, run_airflow
from ig_airflow.testing.faults import fault_env

DAGS = Path(__file__).resolve().parents[2] / "dags"  # the repository's example DAGs
DAG_IDS = {"ig_adult_retrain", "ig_adult_explain", "ig_adult_compare_models", "ig_adult_backfill"}


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("airflow")
    env = airflow_env(out, DAGS)
    migrated = run_airflow(["db", "migrate"], env)
    assert migrated.returncode == 0, migrated.stderr[-2000:]
    ok, log = dag_test("ig_adult_retrain", "2024-01-08", env)  # publishes data + model
    assert ok, log[-4000:]
    return env


def json_output(stdout: str):
    """The JSON document of an ``--output json`` command (Airflow logs warnings around it)."""
    lines = [line for line in stdout.splitlines() if line.startswith(("[", "{"))]
    return json.loads(lines[-1])


def demo_dir(env: dict[str, str]) -> Path:
    return Path(env["IG_AIRFLOW_DEMO_DIR"])


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
    run = demo_dir(env) / "runs" / "explain" / "ds=2024-01-08"
    for name in (
        "attributions.parquet",
        "manifest.json",
        "validation/validated.parquet",
        "validation/quarantine.parquet",
        "validation/gx_result.json",
        "summary/feature_summary.parquet",
        "summary/category_summary.parquet",
        "summary/layer_summary.parquet",  # the config asks for layer attributions at mlp.1
        "drift/drift.json",
    ):
        assert (run / name).exists(), name
    assert not (run / "validation" / "data_docs").exists()  # GX Data Docs are opt-in (SECURITY.md)
    assert json.loads((run / "summary" / "summary.json").read_text())["layers"] == {"mlp.1": 64}
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["runner"] == "ray" and manifest["rows"]["explained"] == 16281
    assert manifest["completeness"]["mean_error"] <= 0.01
    assert (demo_dir(env) / "runs" / "explain" / "history.parquet").exists()


def test_ig_task_fails_once_is_retried_by_airflow_and_output_matches(env, tmp_path) -> None:
    undisturbed = demo_dir(env) / "runs" / "explain" / "ds=2024-01-08" / "attributions.parquet"
    if not undisturbed.exists():
        assert dag_test("ig_adult_explain", "2024-01-08", env)[0]
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
    retried = pd.read_parquet(demo_dir(env) / "runs" / "explain" / "ds=2024-01-09" / "attributions.parquet")
    pd.testing.assert_frame_equal(retried, pd.read_parquet(undisturbed))


def test_backfill_three_dates_is_idempotent(env) -> None:
    dates = ["2024-01-01", "2024-01-02", "2024-01-03"]
    for ds in dates:
        ok, log = dag_test("ig_adult_backfill", ds, env)
        assert ok, log[-4000:]
    root = demo_dir(env) / "runs" / "backfill"
    partitions = sorted(p.name for p in root.glob("ds=*") if (p / "attributions.parquet").exists())
    assert partitions == [f"ds={d}" for d in dates]
    for ds in dates:
        explained = pd.read_parquet(root / f"ds={ds}" / "attributions.parquet")
        source = pd.read_parquet(demo_dir(env) / "partitions" / f"ds={ds}" / "rows.parquet")
        assert sorted(explained.row_id) == sorted(source.row_id)
    history = pd.read_parquet(root / "history.parquet")
    assert sorted(history.run_key.unique()) == dates
    drift = json.loads((root / "ds=2024-01-03" / "drift" / "drift.json").read_text())
    assert drift["reference"].endswith("ds=2024-01-02/attributions.parquet")  # drift over time

    files = [
        root / "ds=2024-01-02" / "attributions.parquet",
        root / "history.parquet",
        root / "ds=2024-01-02" / "validation" / "validated.parquet",
        root / "ds=2024-01-02" / "summary" / "feature_summary.parquet",
    ]
    before = {f: f.read_bytes() for f in files}
    ok, log = dag_test("ig_adult_backfill", "2024-01-02", env)
    assert ok, log[-4000:]
    assert "1 already done for these hashes, 0 to compute" in log  # nothing recomputed
    assert {f: f.read_bytes() for f in files} == before


def test_model_comparison_dag_summarises_drift_between_versions(env) -> None:
    ok, log = dag_test("ig_adult_compare_models", "2024-01-08", env)
    assert ok, log[-4000:]
    root = demo_dir(env) / "runs" / "compare" / "ds=2024-01-08"
    for version in ("production", "candidate"):
        assert (root / version / "summary" / "feature_summary.parquet").exists()
    drift = json.loads((root / "candidate" / "drift" / "drift.json").read_text())
    assert drift["reference"].endswith("production/attributions.parquet")
    assert 0 <= drift["ndcg_at_k"] <= 1 and len(drift["features"]) == 14
