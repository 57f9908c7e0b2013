"""Which run folders a DAG run wrote, read from Airflow's own records: every ig_airflow stage
pushes its run folder as the XCom ``ig_airflow_run`` (:meth:`IGStageOperator.record_run_folder`).
The views never take a path from a request: a request names a DAG, a DAG run and an index into
the folders found here."""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ig_airflow.io import exists, read_json
from ig_airflow.layout import RunLayout
from ig_airflow.operators.base import RUN_FOLDER_XCOM_KEY

MAX_RECORDS = 2000


@dataclass
class RunFolder:
    """One run folder of a DAG run: the stages that wrote it and its drift history table."""

    run_uri: str
    stages: list[str] = field(default_factory=list)
    history_uri: str | None = None

    def has_page(self, page: str) -> bool:
        """Whether the folder has the view ``page``: ``report/`` (its report is written),
        ``history`` (a history table is named) or ``why`` (the IG stage committed the run)."""
        layout = RunLayout(self.run_uri)
        if page == "report/":
            return exists(layout.report.html)
        if page == "history":
            drift = layout.drift.json
            return bool(self.history_uri or (exists(drift) and read_json(drift).get("history")))
        return exists(layout.manifest)


@dataclass
class DagRunFolders:
    """The run folders of one DAG run, in the order their first stage ran."""

    dag_run_id: str
    folders: list[RunFolder]


def allowed_roots() -> list[str]:
    """``[ig_airflow] ui_roots``: the folders the views may read run folders under (comma-separated
    URIs or paths); empty: wherever this deployment's tasks wrote them."""
    from airflow.configuration import conf

    value = conf.get("ig_airflow", "ui_roots", fallback="") or ""
    return [normalised(root.strip()) for root in value.split(",") if root.strip()]


def normalised(uri: str) -> str:
    """``uri`` with ``.``/``..`` resolved and one trailing "/" (a local path made absolute)."""
    scheme, sep, path = uri.partition("://")
    if not sep:
        scheme, path = "", os.path.abspath(uri)
    path = posixpath.normpath(path).rstrip("/") + "/"
    return f"{scheme}://{path}" if sep else path


def under_roots(uri: str, roots: list[str]) -> bool:
    """Whether ``uri`` lies under one of ``roots`` (always, when there are none)."""
    return not roots or any(normalised(uri).startswith(root) for root in roots)


def _records(dag_id: str, dag_run_id: str | None) -> list[tuple[str, str, datetime, Any]]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    query = select(XComModel.run_id, XComModel.task_id, XComModel.timestamp, XComModel.value).where(
        XComModel.dag_id == dag_id, XComModel.key == RUN_FOLDER_XCOM_KEY
    )
    if dag_run_id is not None:
        query = query.where(XComModel.run_id == dag_run_id)
    query = query.order_by(XComModel.timestamp.desc()).limit(MAX_RECORDS)
    with create_session() as session:
        rows = session.execute(query).all()
    return [(row.run_id, row.task_id, row.timestamp, XComModel.deserialize_value(row)) for row in rows]


def _group(records: list[tuple[str, str, datetime, Any]], roots: list[str]) -> list[DagRunFolders]:
    by_run: dict[str, dict[str, RunFolder]] = {}
    for dag_run_id, task_id, _, value in reversed(records):  # oldest first
        uri = value.get("run_uri") if isinstance(value, dict) else None
        if not isinstance(uri, str) or not under_roots(uri, roots):
            continue
        folder = by_run.setdefault(dag_run_id, {}).setdefault(uri, RunFolder(uri))
        folder.stages.append(task_id)
        history = value.get("history_uri")
        folder.history_uri = history if isinstance(history, str) else folder.history_uri
    newest_first = reversed(list(by_run.items()))  # by each DAG run's first record
    return [DagRunFolders(run_id, list(folders.values())) for run_id, folders in newest_first]


def folders_of_dag_run(dag_id: str, dag_run_id: str) -> list[RunFolder]:
    """The run folders the ig_airflow tasks of one DAG run wrote."""
    found = _group(_records(dag_id, dag_run_id), allowed_roots())
    return found[0].folders if found else []


def folders_of_dag(dag_id: str) -> list[DagRunFolders]:
    """Every DAG run of ``dag_id`` with run folders, newest first."""
    return _group(_records(dag_id, None), allowed_roots())
