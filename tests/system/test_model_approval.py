"""A human gate on model promotion, in a running Airflow (api-server, scheduler with the
LocalExecutor, dag-processor; SQLite) driven through its REST API as a reviewer would:
``ig_adult_compare_models`` explains the same rows with the registry's current model and a
candidate; a candidate whose drift raises no alert is promoted without asking anyone, one that
raises alerts waits at ``approve_candidate`` (``awaiting_input``) until someone approves it (the
pointer moves) or rejects it (the pointer stays; who and why are recorded)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from ig_airflow.artifacts import read_metadata
from ig_airflow.promotion import current_model, decisions, pointer_uri
from ig_airflow.testing.airflow_local import airflow_env, airflow_services, migrate, run_airflow
from ig_airflow.testing.demo_data import write_demo_data

DAGS = Path(__file__).resolve().parents[2] / "dags"
DAG_ID, GATE = "ig_adult_compare_models", "approve_candidate"
PROMOTE, KEEP = "promote_candidate", "keep_current"


# The rows each run compares: the gate acts on the drift between the two models' attributions,
# which a share of the Adult test rows shows as well as all 16,281 (seeds 0 and 1 raise alerts).
COMPARED_ROWS = 4000


@pytest.fixture(scope="module")
def airflow(tmp_path_factory, airflow_db) -> dict[str, str]:
    """A running Airflow with the compare DAG unpaused; the demo data written beforehand (its
    first ``COMPARED_ROWS`` test rows to explain), the models trained by the DAG's runs."""
    env = airflow_env(tmp_path_factory.mktemp("airflow"), DAGS)
    migrate(env, airflow_db)
    write_demo_data(env["IG_AIRFLOW_DEMO_DIR"], test_rows=COMPARED_ROWS)
    with airflow_services(env) as running:
        deadline = time.monotonic() + 180
        while (unpaused := run_airflow(["dags", "unpause", DAG_ID], running)).returncode != 0:
            assert time.monotonic() < deadline, unpaused.stderr[-2000:]  # not parsed yet
            time.sleep(1)
        yield running


def api(env: dict[str, str], path: str, body: dict[str, Any] | None = None, method: str | None = None) -> Any:
    """A call to the REST API (every user an admin on this local server)."""
    request = urllib.request.Request(
        f"{env['AIRFLOW__API__BASE_URL']}/api/v2/{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
        method=method,
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.load(reply)


def api_status(
    env: dict[str, str], path: str, body: dict[str, Any] | None = None, method: str | None = None
) -> int:
    """The HTTP status of a call expected to be refused."""
    try:
        api(env, path, body, method)
    except urllib.error.HTTPError as refused:
        return refused.code
    return 200


def run_path(run_id: str) -> str:
    return f"dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id, safe='')}"


def trigger(env: dict[str, str], day: str, seed: int) -> str:
    """Start a run of ``day`` whose candidate is trained with ``seed``; returns its run id."""
    run = api(env, f"dags/{DAG_ID}/dagRuns", {"logical_date": f"{day}T00:00:00Z", "conf": {"seed": seed}})
    return run["dag_run_id"]


def states(env: dict[str, str], run_id: str) -> dict[str, str | None]:
    found = api(env, f"{run_path(run_id)}/taskInstances?limit=100")["task_instances"]
    return {t["task_id"]: t["state"] for t in found}


def wait_for_task(env: dict[str, str], run_id: str, task_id: str, state: str, timeout_s: float = 600) -> None:
    """Wait until ``task_id`` of ``run_id`` is in ``state``."""
    deadline = time.monotonic() + timeout_s
    while True:
        run = api(env, run_path(run_id))["state"]
        now = states(env, run_id)
        if now.get(task_id) == state:
            return
        assert run not in ("success", "failed"), f"{run_id} {run} before {task_id} was {state}: {now}"
        assert time.monotonic() < deadline, (run_id, run, now)
        time.sleep(1)


def finished(env: dict[str, str], run_id: str, timeout_s: float = 600) -> tuple[str, list[str | None]]:
    """The run's state once it has finished, and every state its gate was seen in meanwhile."""
    deadline, seen = time.monotonic() + timeout_s, []
    while True:
        run = api(env, run_path(run_id))["state"]
        gate = states(env, run_id).get(GATE)
        if not seen or seen[-1] != gate:
            seen.append(gate)
        if run in ("success", "failed"):
            return run, seen
        assert time.monotonic() < deadline, (run_id, run, states(env, run_id))
        time.sleep(1)


def demo(env: dict[str, str]) -> Path:
    return Path(env["IG_AIRFLOW_DEMO_DIR"])


def registry(env: dict[str, str]) -> str:
    return str(demo(env) / "registry" / "adult_torch")


def version_checksum(env: dict[str, str], seed: int) -> str:
    return read_metadata(f"{registry(env)}/versions/seed={seed}").checksum()


def decision_of(env: dict[str, str], run_id: str) -> dict[str, Any]:
    """The run's one promotion decision."""
    mine = [d for d in decisions(registry(env)) if d["run_id"] == run_id and d["decision"] != "initialised"]
    assert len(mine) == 1, mine
    return mine[0]


def drift_alerts(env: dict[str, str], day: str) -> list[str]:
    """The alerts the drift stage wrote for ``day``, as its XCom names them."""
    drift = json.loads(
        (demo(env) / "runs" / "compare" / f"ds={day}" / "candidate" / "drift" / "drift.json").read_text()
    )
    return [f"{a['metric']}:{','.join(a['features'])}" for a in drift["alerts"]]


def test_a_candidate_without_drift_alert_is_promoted_without_asking(airflow) -> None:
    """Candidate seed 0 = the registry's first production model: the same attributions, no alert.
    Both versions explained and summarised, the drift taken against production's run folder."""
    run_id = trigger(airflow, "2024-02-01", seed=0)
    state, seen = finished(airflow, run_id)
    assert state == "success" and "awaiting_input" not in seen and seen[-1] == "success", seen
    final = states(airflow, run_id)
    assert (final[GATE], final[PROMOTE], final[KEEP]) == ("success", "success", "skipped")
    assert (
        api_status(airflow, f"{run_path(run_id)}/taskInstances/{GATE}/-1/hitlDetails") == 404
    )  # no one asked
    assert drift_alerts(airflow, "2024-02-01") == []
    root = demo(airflow) / "runs" / "compare" / "ds=2024-02-01"
    for version in ("production", "candidate"):
        assert (root / version / "summary" / "feature_summary.parquet").exists()
    drift = json.loads((root / "candidate" / "drift" / "drift.json").read_text())
    assert drift["reference"].endswith("production")
    assert drift["ndcg_at_k"] == 1 and drift["alerts"] == [] and len(drift["features"]) == 14

    pointer = current_model(registry(airflow), verify=True)
    assert pointer["checksum"] == version_checksum(airflow, 0) and pointer["uri"].endswith("seed=0")
    assert (pointer["approval"], pointer["promoted_by"], pointer["run_id"]) == (
        "automatic",
        "automatic",
        run_id,
    )
    record = decision_of(airflow, run_id)
    assert (record["decision"], record["approval"], record["alerts"]) == ("promoted", "automatic", [])
    assert record["drift"]["ndcg_at_k"] == 1.0
    first = decisions(registry(airflow))[0]  # the registry's first run initialised it
    assert (first["decision"], first["approval"]) == ("initialised", "initial")


def assert_asks_with_the_alerts_and_the_report(airflow: dict[str, str], run_id: str, day: str) -> None:
    detail = api(airflow, f"{run_path(run_id)}/taskInstances/{GATE}/-1/hitlDetails")
    alerts = drift_alerts(airflow, day)
    assert alerts and detail["options"] == ["Approve", "Reject"] and "reason" in detail["params"]
    assert f"{len(alerts)} drift alert(s)" in detail["subject"]
    for alert in alerts:
        assert f"- `{alert}`" in detail["body"]
    quoted = urllib.parse.quote(run_id, safe="")
    page = f"{airflow['AIRFLOW__API__BASE_URL']}/ig-airflow/dags/{DAG_ID}/runs/{quoted}/report/"
    assert f"]({page})" in detail["body"]  # a Markdown link to the run's report page
    report = demo(airflow) / "runs" / "compare" / f"ds={day}" / "candidate" / "report" / "report.html"
    assert f"`{report}`" in detail["body"] and report.exists()
    assert detail["response_received"] is False
    later = states(airflow, run_id)
    assert (later[PROMOTE], later[KEEP]) == (None, None)  # nothing decided while it waits


def answer(airflow: dict[str, str], run_id: str, response: dict[str, Any]) -> str:
    """Answer the run's gate as a reviewer; returns who answered."""
    path = f"{run_path(run_id)}/taskInstances/{GATE}/-1/hitlDetails"
    answered = api(airflow, path, response, method="PATCH")
    assert api_status(airflow, path, response, method="PATCH") == 409  # one answer only
    return answered["responded_by"]["name"]


def other_seed(env: dict[str, str]) -> int:
    """A seed whose model is not the current production model's (so that drift raises alerts)."""
    pointer = current_model(registry(env))
    return 0 if pointer and not pointer["uri"].endswith("seed=0") else 1


def waiting_run(env: dict[str, str], day: str) -> tuple[str, int]:
    """A run of ``day`` whose candidate differs from production, once it waits at the gate
    (asking with the alerts and the report); returns its run id and the candidate's seed."""
    seed = other_seed(env)
    run_id = trigger(env, day, seed)
    wait_for_task(env, run_id, GATE, "awaiting_input")
    time.sleep(3)  # it stays there
    assert states(env, run_id)[GATE] == "awaiting_input"
    assert api(env, run_path(run_id))["state"] == "running"
    assert_asks_with_the_alerts_and_the_report(env, run_id, day)
    return run_id, seed


def test_an_approved_candidate_becomes_the_current_model(airflow) -> None:
    run_id, seed = waiting_run(airflow, "2024-02-02")
    before = current_model(registry(airflow))
    reviewer = answer(airflow, run_id, {"chosen_options": ["Approve"]})
    assert finished(airflow, run_id)[0] == "success"
    assert (states(airflow, run_id)[PROMOTE], states(airflow, run_id)[KEEP]) == ("success", "skipped")
    pointer = current_model(registry(airflow), verify=True)
    assert pointer["checksum"] == version_checksum(airflow, seed) != before["checksum"]  # moved
    assert (pointer["approval"], pointer["promoted_by"], pointer["run_id"]) == ("human", reviewer, run_id)
    assert pointer["previous"]["checksum"] == before["checksum"]
    record = decision_of(airflow, run_id)
    assert (record["decision"], record["by"], record["reason"]) == ("promoted", reviewer, "")
    assert record["alerts"] == drift_alerts(airflow, "2024-02-02")


def test_a_rejected_candidate_leaves_the_current_model_and_the_reason_is_recorded(airflow) -> None:
    run_id, seed = waiting_run(airflow, "2024-02-03")
    production = Path(pointer_uri(registry(airflow))).read_bytes()
    reason = "leans on race and sex far more than production"
    reviewer = answer(airflow, run_id, {"chosen_options": ["Reject"], "params_input": {"reason": reason}})
    assert finished(airflow, run_id)[0] == "success"
    assert (states(airflow, run_id)[KEEP], states(airflow, run_id)[PROMOTE]) == ("success", "skipped")
    assert Path(pointer_uri(registry(airflow))).read_bytes() == production  # the pointer stays
    record = decision_of(airflow, run_id)
    assert (record["decision"], record["by"], record["reason"]) == ("rejected", reviewer, reason)
    assert record["alerts"] == drift_alerts(airflow, "2024-02-03")
    assert record["candidate"]["checksum"] == version_checksum(airflow, seed)
    assert record["production"]["checksum"] == json.loads(production)["checksum"]
