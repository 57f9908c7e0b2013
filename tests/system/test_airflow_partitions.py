"""Scheduling for real: a running Airflow (api-server, scheduler with the LocalExecutor,
dag-processor; SQLite) in subprocesses. ``ig_adult_land_partition`` (``CronPartitionTimetable``)
lands partitions and emits partitioned asset events; ``ig_adult_backfill``
(``PartitionedAssetTimetable``) explains each one, three at a time. A retrain's model Asset event
starts ``ig_adult_explain`` by itself."""

from __future__ import annotations

import fcntl
import json
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from ig_airflow.analysis.drift import read_history
from ig_airflow.identity import find_runs
from ig_airflow.io import read_json
from ig_airflow.layout import RunLayout
from ig_airflow.testing.airflow_local import airflow_env, airflow_services, dag_test, migrate, run_airflow
from ig_airflow.testing.demo_data import keep_test_rows

DAGS = Path(__file__).resolve().parents[2] / "dags"
PRODUCER, CONSUMER, EXPLAIN = "ig_adult_land_partition", "ig_adult_backfill", "ig_adult_explain"
BACKFILLED = [f"2024-01-0{day}" for day in range(1, 6)]
PARALLEL = 3


@pytest.fixture(scope="module")
def airflow(tmp_path_factory, airflow_db) -> dict[str, str]:
    """A running Airflow with the demo data and model published; the two DAGs unpaused."""
    env = airflow_env(tmp_path_factory.mktemp("airflow"), DAGS)
    migrate(env, airflow_db)
    ok, log = dag_test("ig_adult_retrain", "2024-01-08", env)  # publishes data + model
    assert ok, log[-4000:]
    # the explain run its model event starts explains a share of the rows (its partition: today);
    # the partitions stay whole
    keep_test_rows(env["IG_AIRFLOW_DEMO_DIR"], 2000)
    with airflow_services(env) as running:
        for dag_id in (PRODUCER, CONSUMER):
            unpaused = run_airflow(["dags", "unpause", dag_id], running)
            assert unpaused.returncode == 0, unpaused.stderr[-2000:]
        yield running


def api(env: dict[str, str], path: str, body: dict[str, Any] | None = None) -> Any:
    """A call to the REST API (every user an admin on this local server)."""
    request = urllib.request.Request(
        f"{env['AIRFLOW__API__BASE_URL']}/api/v2/{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.load(reply)


def consumer_runs(env: dict[str, str], keys: list[str], timeout_s: float = 420) -> list[dict[str, Any]]:
    """The consumer's runs of these partition keys, once every one has finished."""
    deadline = time.monotonic() + timeout_s
    while True:
        runs = api(env, f"dags/{CONSUMER}/dagRuns?limit=100")["dag_runs"]
        mine = [r for r in runs if r["partition_key"] in keys]
        if {r["partition_key"] for r in mine} == set(keys) and all(
            r["state"] in ("success", "failed") for r in mine
        ):
            return mine
        assert time.monotonic() < deadline, [(r["partition_key"], r["state"]) for r in mine]
        time.sleep(1)


def intervals(
    env: dict[str, str], runs: list[dict[str, Any]], task_id: str
) -> list[tuple[datetime, datetime]]:
    """When ``task_id`` ran in each of ``runs``."""
    ids = {r["dag_run_id"] for r in runs}
    found = api(env, f"dags/~/dagRuns/~/taskInstances?dag_ids={CONSUMER}&task_id={task_id}&limit=100")
    return [
        (datetime.fromisoformat(t["start_date"]), datetime.fromisoformat(t["end_date"]))
        for t in found["task_instances"]
        if t["dag_run_id"] in ids
    ]


def most_at_once(spans: list[tuple[datetime, datetime]]) -> int:
    """The most spans that overlap at one instant."""
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def run_folder(root: Path, key: str) -> Path:
    folders = [Path(r["uri"]) for r in find_runs(str(root / f"ds={key}"))]
    assert len(folders) == 1, folders  # one explanation per partition
    return folders[0]


def assert_explains_its_partition(demo: Path, folder: Path, key: str) -> None:
    explained = pd.read_parquet(RunLayout(str(folder)).attributions, columns=["row_id"])
    landed = pd.read_parquet(demo / "partitions" / f"ds={key}", columns=["row_id"])
    assert sorted(explained.row_id) == sorted(landed.row_id)


def assert_nothing_left_locked(root: Path, folders: list[Path]) -> None:
    """No temporary file, no lock file in a run folder, every lease released, and the history's
    lock file (kept beside it for ``flock``) free."""
    names = [p.name for p in root.rglob("*")]
    assert not [n for n in names if ".tmp-" in n or ".old-" in n], names
    for folder in folders:
        assert not list(folder.rglob("*.lock")), folder
        assert (read_json(RunLayout(str(folder)).lease) or {}).get("holder") is None, folder
    for lock in root.rglob("*.lock"):
        with open(lock, "rb") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if still held


def test_backfill_of_five_partitions_three_at_a_time(airflow) -> None:
    created = run_airflow(
        [
            "backfill",
            "create",
            "--dag-id",
            PRODUCER,
            "--from-date",
            BACKFILLED[0],
            "--to-date",
            BACKFILLED[-1],
        ]
        + ["--max-active-runs", str(PARALLEL)],
        airflow,
    )
    assert created.returncode == 0, created.stderr[-3000:]
    runs = consumer_runs(airflow, BACKFILLED)
    assert sorted(r["partition_key"] for r in runs) == BACKFILLED  # exactly one run per partition
    assert all(r["state"] == "success" for r in runs), runs
    ig = intervals(airflow, runs, "compute_ig")
    assert len(ig) == len(BACKFILLED) and 2 <= most_at_once(ig) <= PARALLEL  # in parallel, 3 at most

    demo = Path(airflow["IG_AIRFLOW_DEMO_DIR"])
    root = demo / "runs" / "backfill"
    folders = {key: run_folder(root, key) for key in BACKFILLED}
    for key, folder in folders.items():
        assert_explains_its_partition(demo, folder, key)
    assert_nothing_left_locked(root, list(folders.values()))

    history = read_history(str(root / "history.parquet")).drop_duplicates(
        ["run_key", "model_version", "run_id"]
    )
    assert sorted(history.run_key) == BACKFILLED  # complete: one record per run, in partition order
    recorded = dict(zip(history.run_key, history.attributions_uri, strict=True))
    assert recorded == {key: RunLayout(str(folder)).attributions for key, folder in folders.items()}
    for i, (key, folder) in enumerate(folders.items()):
        # the previous partition's run, whichever finished first (the drift task waits for it)
        drift = read_json(RunLayout(str(folder)).drift.json)
        assert drift["reference"] == (recorded[BACKFILLED[i - 1]] if i else None), (key, drift)


def test_each_landed_partition_triggers_one_explanation_of_it(airflow) -> None:
    keys = ["2024-01-06", "2024-01-07"]
    for key in keys:  # the producer's partitioned runs, as its schedule would create them
        api(airflow, f"dags/{PRODUCER}/dagRuns", {"logical_date": None, "partition_key": key})
    runs = consumer_runs(airflow, keys)
    assert sorted(r["partition_key"] for r in runs) == keys and all(r["state"] == "success" for r in runs)
    time.sleep(5)  # no second run appears for an event already consumed
    later = api(airflow, f"dags/{CONSUMER}/dagRuns?limit=100")["dag_runs"]
    assert sorted(r["partition_key"] for r in later if r["partition_key"] in keys) == keys
    demo = Path(airflow["IG_AIRFLOW_DEMO_DIR"])
    for key in keys:
        assert_explains_its_partition(demo, run_folder(demo / "runs" / "backfill", key), key)


def finished(env: dict[str, str], dag_id: str, run_id: str, timeout_s: float = 600) -> str:
    """The state of a DAG run once it has finished."""
    deadline = time.monotonic() + timeout_s
    path = f"dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}"
    while (state := api(env, path)["state"]) not in ("success", "failed"):
        assert time.monotonic() < deadline, (dag_id, run_id, state)
        time.sleep(1)
    return state


def explain_runs(env: dict[str, str], settle_s: float = 10, timeout_s: float = 600) -> list[dict[str, Any]]:
    """The explain DAG's runs once none is queued or running (and none started for ``settle_s``)."""
    deadline, quiet_since = time.monotonic() + timeout_s, None
    while True:
        runs = api(env, f"dags/{EXPLAIN}/dagRuns?limit=100")["dag_runs"]
        if any(r["state"] in ("queued", "running") for r in runs):
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= settle_s:
            return runs
        assert time.monotonic() < deadline, [(r["dag_run_id"], r["state"]) for r in runs]
        time.sleep(1)


def test_a_retrain_triggers_an_explanation_of_the_same_partition_by_its_asset(airflow) -> None:
    """The day's explain run, then a retrain that publishes another model version: its Asset
    event alone starts an explain run of the same day, in a second run folder; the history holds
    both runs, and drift compares the two model versions."""
    assert run_airflow(["dags", "unpause", EXPLAIN], airflow).returncode == 0
    explain_runs(airflow)  # whatever the unpause started (an event of the fixture's retrain)
    today = datetime.now(UTC).date().isoformat()  # the partition of runs with no logical date
    root = Path(airflow["IG_AIRFLOW_DEMO_DIR"]) / "runs" / "explain"
    if not (root / f"ds={today}").exists():  # the day's run, as the nightly schedule starts it
        api(airflow, f"dags/{EXPLAIN}/dagRuns", {"logical_date": None})
        explain_runs(airflow)
    before = [Path(r["uri"]) for r in find_runs(str(root / f"ds={today}"))]
    earlier = read_json(RunLayout(str(before[-1])).manifest)["run"]

    assert run_airflow(["dags", "unpause", "ig_adult_retrain"], airflow).returncode == 0
    retrain = api(airflow, "dags/ig_adult_retrain/dagRuns", {"logical_date": None, "conf": {"seed": 1}})
    assert finished(airflow, "ig_adult_retrain", retrain["dag_run_id"]) == "success"
    runs = explain_runs(airflow)
    triggered = [r for r in runs if r["run_type"] == "asset_triggered" and r["state"] == "success"]
    assert triggered, [(r["dag_run_id"], r["run_type"], r["state"]) for r in runs]
    after = [Path(r["uri"]) for r in find_runs(str(root / f"ds={today}"))]
    assert after[: len(before)] == before and len(after) == len(before) + 1  # its own folder
    latest = read_json(RunLayout(str(after[-1])).manifest)["run"]
    assert latest["run_id"] == triggered[-1]["dag_run_id"]  # the run the Asset event started
    assert latest["model_version"] != earlier["model_version"]  # the retrained model
    history = read_history(str(root / "history.parquet"))
    day = history[history.run_key == today].drop_duplicates(["model_version", "run_id"])
    assert {earlier["model_version"], latest["model_version"]} <= set(day.model_version)
    drift = read_json(RunLayout(str(after[-1])).drift.json)
    assert drift["reference"] == RunLayout(str(before[-1])).attributions  # the previous model version
    assert 0 <= drift["ndcg_at_k"] <= 1

    # the run's results travel with its asset events (the UI shows them; downstream DAGs read them)
    events = api(airflow, "assets/events?limit=200")["asset_events"]
    run_id = triggered[-1]["dag_run_id"]
    mine = {e["source_task_id"]: e["extra"] for e in events if e["source_run_id"] == run_id}
    explained, drifted = mine["compute_ig"], mine["drift"]
    layout = RunLayout(str(after[-1]))
    validated = read_json(layout.validation.report)["rows"]
    assert explained["model_version"] == latest["model_version"] and explained["partition"] == f"ds={today}"
    assert explained["rows_explained"] == validated["validated"] > 0
    assert explained["rows_quarantined"] == validated["quarantined"]
    assert 0.9 <= explained["converged_share"] <= 1 and explained["attributions"] == layout.attributions
    assert drifted["model_version"] == latest["model_version"] and drifted["reference"] == drift["reference"]
    assert drifted["alert"] == bool(drift["alerts"]) and len(drifted["top_features"]) == 5
    quality, measured = mine["quality"], read_json(layout.quality.json)
    assert quality["passed"] is measured["passed"] is True and quality["failed_checks"] == []
    assert (
        quality["deletion_auc"]["ig"] == measured["deletion"]["auc"]["ig"] < quality["deletion_auc"]["random"]
    )
    assert quality["model_version"] == latest["model_version"]
