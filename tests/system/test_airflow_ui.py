"""The explanation views in the Airflow UI, for real: an Airflow API server with the ig_airflow
plugin (installed by its entry point) and the simple auth manager's login, a DAG run of
``ig_adult_explain``, headless Chromium logging in and opening the DAG run's "Explanations" tab.
Without a session the views answer 401/403; paths that try to leave the run folder get 404."""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from ig_airflow.analysis.row_explanation import explain_prediction
from ig_airflow.dataset import open_dataset
from ig_airflow.io import read_json
from ig_airflow.layout import RunLayout
from ig_airflow.testing.airflow_local import airflow_env, airflow_services, dag_test, migrate
from ig_airflow.testing.demo_data import copy_demo, keep_test_rows

DAGS = Path(__file__).resolve().parents[2] / "dags"
DAG_ID = "ig_adult_explain"
USER = "analyst"
EXPLAINED_ROWS = 2000
# The README's screenshot is this test's: IG_AIRFLOW_SCREENSHOT_DIR=docs/images pytest -k chromium
SCREENSHOT_DIR = os.environ.get("IG_AIRFLOW_SCREENSHOT_DIR")


@pytest.fixture(scope="module")
def airflow(tmp_path_factory, airflow_db, demo) -> dict[str, Any]:
    """An explained DAG run, then a running Airflow whose only login is ``analyst``."""
    env = airflow_env(tmp_path_factory.mktemp("airflow_ui"), DAGS)
    migrate(env, airflow_db)
    copy_demo(demo, env["IG_AIRFLOW_DEMO_DIR"])  # what ig_adult_retrain publishes
    keep_test_rows(env["IG_AIRFLOW_DEMO_DIR"], EXPLAINED_ROWS)  # the views show any run
    ok, log = dag_test(DAG_ID, "2024-01-08", env)
    assert ok, log[-4000:]
    password = secrets.token_urlsafe(12)
    with airflow_services(env, users={USER: password}) as running:
        base = running["AIRFLOW__API__BASE_URL"]
        token = login_token(base, password)
        runs = call(base, f"/api/v2/dags/{DAG_ID}/dagRuns", token)[1]["dag_runs"]
        assert len(runs) == 1, runs
        yield {
            "env": running,
            "base": base,
            "token": token,
            "password": password,
            "run_id": runs[0]["dag_run_id"],
        }


def login_token(base: str, password: str) -> str:
    status, body = call(base, "/auth/token", body={"username": USER, "password": password})
    assert status in (200, 201), body
    return body["access_token"]


def call(base: str, path: str, token: str | None = None, body: dict | None = None) -> tuple[int, Any]:
    """A GET (or a JSON POST) to the server; the status and the body (JSON when it is JSON)."""
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            status, raw, kind = reply.status, reply.read(), reply.headers.get("Content-Type", "")
    except urllib.error.HTTPError as error:
        status, raw, kind = error.code, error.read(), error.headers.get("Content-Type", "")
    return status, json.loads(raw) if "json" in kind else raw.decode(errors="replace")


def raw_get(base: str, raw_path: str, token: str) -> tuple[int, bytes]:
    """A GET whose path is sent exactly as written (no client-side ``..`` resolution)."""
    url = urllib.parse.urlsplit(base)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    connection.request("GET", raw_path, headers={"Authorization": f"Bearer {token}"})
    reply = connection.getresponse()
    return reply.status, reply.read()


def view(run_id: str, page: str = "") -> str:
    return f"/ig-airflow/dags/{DAG_ID}/runs/{urllib.parse.quote(run_id, safe='')}/{page}"


def run_folder(airflow: dict[str, Any]) -> str:
    """The run folder, from the manifest the IG stage committed under the demo directory."""
    manifests = list(Path(airflow["env"]["IG_AIRFLOW_DEMO_DIR"], "runs", "explain").rglob("manifest.json"))
    assert len(manifests) == 1, manifests
    return str(manifests[0].parent)


def explained_row(airflow: dict[str, Any]) -> dict[str, Any]:
    """The 7th explained row of the run (its ids and attributions)."""
    return open_dataset(RunLayout(run_folder(airflow)).attributions).read_rows(6, 7).to_pylist()[0]


def test_views_need_a_session_with_permission(airflow) -> None:
    base, run_id = airflow["base"], airflow["run_id"]
    pages = [f"0/why?id={explained_row(airflow)['row_id']}", "0/history", "0/report/", "why", "report/"]
    for page in [f"/ig-airflow/dags/{DAG_ID}/", view(run_id), *(view(run_id, p) for p in pages)]:
        assert call(base, page)[0] == 401, page
        assert call(base, page, token="not-a-token")[0] == 403, page
        assert call(base, page, token=airflow["token"])[0] == 200, page
    missing = call(base, view(run_id, "0/why?id=999999999"), token=airflow["token"])
    assert missing[0] == 404 and "no row with" in missing[1]


def test_paths_cannot_leave_the_run_folder(airflow) -> None:
    base, token, run_id = airflow["base"], airflow["token"], airflow["run_id"]
    manifest = Path(RunLayout(run_folder(airflow)).manifest).read_bytes()
    for path in [
        view(run_id, "0/report/../../manifest.json"),
        view(run_id, "0/report/..%2F..%2Fmanifest.json"),
        view(run_id, "0/report/%2Fetc%2Fpasswd"),
        view(run_id, "0/report/.%2E/manifest.json"),
        view(run_id, "0/report/../../../../../../etc/passwd"),
        view(run_id, "7/report/"),
        view("../../other", "0/report/"),
    ]:
        status, body = raw_get(base, path, token)
        assert status in (400, 404), (path, status)
        assert manifest[:200] not in body and b"root:" not in body, path
    status, body = raw_get(base, view(run_id, "0/report/importance.png"), token)
    assert status == 200 and body.startswith(b"\x89PNG")


def test_extra_links_lead_to_the_pages(airflow) -> None:
    base, token, run_id = airflow["base"], airflow["token"], airflow["run_id"]
    quoted = urllib.parse.quote(run_id, safe="")
    links = {}
    for task_id in ("compute_ig", "aggregate", "drift"):
        path = f"/api/v2/dags/{DAG_ID}/dagRuns/{quoted}/taskInstances/{task_id}/links"
        status, found = call(base, path, token)
        assert status == 200, found
        links.update(found["extra_links"])
    assert {"Explanations", "Why (one row)", "Explanation report", "Drift history"} <= set(links), links
    # built by the tasks of `airflow dags test`, which ran with no [api] base_url: host-relative
    for name, url in links.items():
        assert url.startswith("/ig-airflow/dags/ig_adult_explain/runs/"), (name, url)
        status, body = call(base, url, token)  # the redirects of report/why/history followed
        assert status == 200, (name, url, body[:300])
    report = call(base, links["Explanation report"], token)[1]
    assert "<title>" in report and "Global importance" in report


def test_the_run_view_in_the_airflow_ui_with_chromium(airflow, tmp_path: Path) -> None:
    """Log in on Airflow's login page, open the DAG run's "Explanations" tab, read the top
    features and ask why for one row, inside the Airflow UI's frame."""
    from playwright.sync_api import sync_playwright

    base, run_id, folder = airflow["base"], airflow["run_id"], run_folder(airflow)
    top = read_json(RunLayout(folder).summary.json)["top_features"]
    row = explained_row(airflow)
    expected = explain_prediction(folder, row["row_id"])
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "headless Chromium is needed (scripts/setup.sh installs Debian's chromium)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(base + "/", wait_until="networkidle")
        page.fill("input[name=username]", USER)
        page.fill("input[name=password]", airflow["password"])
        page.keyboard.press("Enter")
        page.wait_for_url(lambda url: "/auth/" not in url, timeout=60_000)
        page.goto(f"{base}/dags/{DAG_ID}/runs/{urllib.parse.quote(run_id, safe='')}/plugin/ig_airflow_run")
        frame = page.frame_locator("iframe")
        features = frame.locator("table.top-features td:first-child")
        features.first.wait_for(timeout=60_000)
        assert features.all_inner_texts()[: len(top)] == top
        shots = [tmp_path / "airflow_explanations_view.png", tmp_path / "airflow_why_view.png"]
        page.screenshot(path=str(shots[0]))
        frame.locator("input[name=id]").first.fill(str(row["row_id"]))
        frame.locator("form.why-search button").first.click()
        contributions = frame.locator("table.contributions td:first-child")
        contributions.first.wait_for(timeout=60_000)
        assert contributions.all_inner_texts() == list(expected.contributions["feature"])
        assert f"{expected.result['prediction']:.4f}" in frame.locator("#why").inner_text()
        page.screenshot(path=str(shots[1]))
        browser.close()
    for shot in shots:
        assert shot.stat().st_size > 20_000
        if SCREENSHOT_DIR:
            shutil.copy(shot, Path(SCREENSHOT_DIR) / shot.name)
