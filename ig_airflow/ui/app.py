"""The FastAPI app of the ig_airflow views, mounted by the plugin under ``/ig-airflow`` of the
Airflow API server. Every route asks Airflow's auth manager whether the caller may read the DAG's
runs (the session cookie of the Airflow UI, or a bearer token): 401 without a session, 403
without the permission. A request names a DAG, a DAG run, an index into the run folders that
the DAG run's tasks recorded and, for the report, an image name that must be one of the files
of that report folder: no path from a request reaches the filesystem."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ig_airflow.io import exists, filesystem, read_bytes
from ig_airflow.layout import RunLayout
from ig_airflow.ui import pages
from ig_airflow.ui.runs import RunFolder, folders_of_dag, folders_of_dag_run

REPORT_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,120}\.(png|svg|html)$")
MEDIA_TYPES = {"png": "image/png", "svg": "image/svg+xml", "html": "text/html; charset=utf-8"}
# What a page of ours may load: its own images and inline styles; no script, no frame inside it.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; form-action 'self'"
)
DEFAULT_PAGES = ("report/", "history", "why")


def can_read_dag_runs() -> Any:
    """The dependency of every route: Airflow's check for reading the DAG's runs."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag

    return Depends(requires_access_dag(method="GET", access_entity=DagAccessEntity.RUN))


def html(body: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code, headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY})


def _folder(dag_id: str, run_id: str, index: int) -> RunFolder:
    folders = folders_of_dag_run(dag_id, run_id)
    if not 0 <= index < len(folders):
        raise HTTPException(404, f"DAG run {run_id!r} of {dag_id!r} has no explanation run {index}")
    return folders[index]


def _default_index(dag_id: str, run_id: str, page: str) -> int:
    """The run folder a plain link to ``page`` means: the last one that has it."""
    folders = folders_of_dag_run(dag_id, run_id)
    for index in reversed(range(len(folders))):
        if folders[index].has_page(page):
            return index
    raise HTTPException(404, f"DAG run {run_id!r} of {dag_id!r} has no {page.rstrip('/')} page")


router = APIRouter(dependencies=[can_read_dag_runs()])


@router.get("/dags/{dag_id}/", response_class=HTMLResponse)
def dag_runs(dag_id: str) -> HTMLResponse:
    """The DAG's runs that wrote explanations."""
    return html(pages.dag_page(dag_id, folders_of_dag(dag_id)))


@router.get("/dags/{dag_id}/runs/{run_id}/", response_class=HTMLResponse)
def dag_run(dag_id: str, run_id: str) -> HTMLResponse:
    """One DAG run's explanations: the view shown on the DAG run in the Airflow UI."""
    return html(pages.run_page(dag_id, run_id, folders_of_dag_run(dag_id, run_id)))


@router.get("/dags/{dag_id}/runs/{run_id}/report/")
@router.get("/dags/{dag_id}/runs/{run_id}/{page}")
def default_page(dag_id: str, run_id: str, request: Request, page: str = "report/") -> RedirectResponse:
    """``report/``, ``why`` or ``history`` of the DAG run's run folder that has one (extra links)."""
    page = "report/" if page == "report" else page
    if page not in DEFAULT_PAGES:
        raise HTTPException(404, f"no page {page!r}")
    path = request.url.path
    run_path = path[: path.rindex("/runs/")] + f"/runs/{quote(run_id, safe='')}/"
    target = f"{run_path}{_default_index(dag_id, run_id, page)}/{page}"
    return RedirectResponse(f"{target}?{request.url.query}" if request.url.query else target, 307)


@router.get("/dags/{dag_id}/runs/{run_id}/{index}/why", response_class=HTMLResponse)
def why(dag_id: str, run_id: str, index: int, row_id: str = Query("", alias="id")) -> HTMLResponse:
    """One row's explanation; a search box for the id."""
    folder = _folder(dag_id, run_id, index)
    body, status = pages.why_page(dag_id, run_id, index, folder.run_uri, row_id)
    return html(body, status)


@router.get("/dags/{dag_id}/runs/{run_id}/{index}/history", response_class=HTMLResponse)
def history(dag_id: str, run_id: str, index: int) -> HTMLResponse:
    """The drift history table the run was recorded in."""
    folder = _folder(dag_id, run_id, index)
    history_uri = folder.history_uri or pages.run_facts(folder.run_uri)["history_uri"]
    return html(pages.history_page(dag_id, run_id, history_uri))


@router.get("/dags/{dag_id}/runs/{run_id}/{index}/report/")
def report(dag_id: str, run_id: str, index: int) -> Response:
    """The run's HTML report (static, its images beside it)."""
    page = RunLayout(_folder(dag_id, run_id, index).run_uri).report.html
    if not exists(page):
        raise HTTPException(404, "this run has no report (yet)")
    return _file_response(page, MEDIA_TYPES["html"])


@router.get("/dags/{dag_id}/runs/{run_id}/{index}/report/{name}")
def report_file(dag_id: str, run_id: str, index: int, name: str) -> Response:
    """A file of the run's report folder, by its exact name in that folder."""
    folder = RunLayout(_folder(dag_id, run_id, index).run_uri).report
    if not REPORT_FILE.match(name) or not exists(folder.root):
        raise HTTPException(404, "no such report file")
    fs, root = filesystem(folder.root)
    names = {entry.rstrip("/").rsplit("/", 1)[-1] for entry in fs.ls(root, detail=False)}
    if name not in names:
        raise HTTPException(404, "no such report file")
    return _file_response(folder.image(name), MEDIA_TYPES[name.rsplit(".", 1)[1]])


def _file_response(uri: str, media_type: str) -> Response:
    headers = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff"}
    return Response(read_bytes(uri), media_type=media_type, headers=headers)


def create_app() -> FastAPI:
    """The app the plugin mounts (``fastapi_apps``)."""
    app = FastAPI(title="ig_airflow explanations", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(router)
    return app
