"""Where the ig_airflow views live in the Airflow UI, and the extra links that lead to them.

The views are served by the ig_airflow plugin (``ig_airflow.ui``) under :data:`URL_PREFIX` of
the Airflow API server; a link is built in the task's process (Airflow 3 stores extra links as
XComs when a task finishes), from ``[api] base_url``."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

URL_PREFIX = "/ig-airflow"


def base_url() -> str:
    """The API server's address (``[api] base_url``), or "" for links relative to the UI's host."""
    from airflow.sdk import conf

    return (conf.get("api", "base_url", fallback="") or "").rstrip("/")


def run_page_url(dag_id: str, run_id: str, page: str = "", *, absolute: bool = True) -> str:
    """The page of one DAG run's explanations: ``page`` is "" (the run), ``"report/"``,
    ``"why"`` or ``"history"``."""
    path = f"{URL_PREFIX}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}/{page}"
    return f"{base_url()}{path}" if absolute else path


class ExplanationPageLink(BaseOperatorLink):
    """An extra link from a task to a page of its DAG run's explanations."""

    page = ""
    label = "Explanations"

    @property
    def name(self) -> str:
        return self.label

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        return run_page_url(ti_key.dag_id, ti_key.run_id, self.page)


class ReportLink(ExplanationPageLink):
    """The run's HTML report (top features, drift, plots)."""

    page = "report/"
    label = "Explanation report"


class RowExplanationLink(ExplanationPageLink):
    """One row's "why": the page with a search box for a row id."""

    page = "why"
    label = "Why (one row)"


class DriftHistoryLink(ExplanationPageLink):
    """The drift history of the run's model and input."""

    page = "history"
    label = "Drift history"


EXTRA_LINKS = (ExplanationPageLink(), ReportLink(), RowExplanationLink(), DriftHistoryLink())
"""Every link the operators carry: the plugin registers them so that the UI knows their names."""
