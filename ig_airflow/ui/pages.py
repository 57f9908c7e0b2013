"""The HTML of the ig_airflow views: a DAG's explanation runs, one DAG run's explanations (top
features, rows, completeness, drift alerts), one row's "why" and the drift history. Built from
run folders' files (manifest, summary, drift, history) with every value escaped (Jinja2
autoescape); no Airflow import here, so the pages render the same from a notebook."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ig_airflow.exceptions import IGAirflowError
from ig_airflow.io import exists, read_json
from ig_airflow.layout import RunLayout
from ig_airflow.ui.templates import render

TOP_FEATURES = 10
HISTORY_FEATURES = 6


def _json_or_empty(uri: str) -> dict[str, Any]:
    return read_json(uri) if exists(uri) else {}


def run_facts(run_uri: str, importance: bool = True) -> dict[str, Any]:
    """What one run folder says about itself: identity, rows, completeness, drift, quality and
    (unless ``importance`` is False: a listing that shows none) its top features."""
    layout = RunLayout(run_uri)
    manifest = _json_or_empty(layout.manifest)
    validation = _json_or_empty(layout.validation.report).get("rows") or {}
    drift = _json_or_empty(layout.drift.json)
    completeness = manifest.get("completeness") or {}
    explained = (manifest.get("rows") or {}).get("explained")
    unconverged = completeness.get("unconverged_rows")
    return {
        "uri": run_uri,
        "finished": bool(manifest),
        "run": manifest.get("run") or {},
        "framework": (manifest.get("artifact") or {}).get("framework"),
        "rows_explained": explained,
        "rows_quarantined": validation.get("quarantined"),
        "converged_share": 1 - unconverged / explained if explained and unconverged is not None else None,
        "mean_completeness_error": completeness.get("mean_error"),
        "importance": _importance(layout) if importance else [],
        "drift": drift or None,
        "quality": _json_or_empty(layout.quality.json) or None,
        "has_report": exists(layout.report.html),
        "history_uri": drift.get("history"),
    }


def _importance(layout: RunLayout) -> list[dict[str, Any]]:
    table = layout.summary.table("feature")
    if not exists(table):
        return []
    from ig_airflow.io import read_parquet

    summary = read_parquet(table).to_pandas()
    if "target" in summary.columns:
        summary = summary[summary["target"] == summary["target"].iloc[0]]
    summary = summary.sort_values("mean_abs_attribution", ascending=False).head(TOP_FEATURES)
    largest = float(summary["mean_abs_attribution"].max() or 1.0)
    return [
        {
            "feature": row.feature,
            "mean_abs": float(row.mean_abs_attribution),
            "mean": float(row.mean_attribution),
            "width": round(100 * float(row.mean_abs_attribution) / largest, 1),
        }
        for row in summary.itertuples(index=False)
    ]


def dag_page(dag_id: str, dag_runs: list[Any]) -> str:
    """Every DAG run of ``dag_id`` with run folders, newest first, one line per run folder."""
    lines = [
        {"dag_run_id": group.dag_run_id, "index": index, "facts": run_facts(folder.run_uri, importance=False)}
        for group in dag_runs
        for index, folder in enumerate(group.folders)
    ]
    return render("dag.html", dag_id=dag_id, lines=lines)


def run_page(dag_id: str, dag_run_id: str, folders: list[Any]) -> str:
    """One DAG run's explanations: a card per run folder, with the why search box."""
    cards = [run_facts(folder.run_uri) for folder in folders]
    return render("run.html", dag_id=dag_id, dag_run_id=dag_run_id, cards=cards)


def why_page(dag_id: str, dag_run_id: str, index: int, run_uri: str, row_id: str) -> tuple[str, int]:
    """One row's explanation (``ig-airflow why`` as a page) and the HTTP status: 404 for an id
    the run does not have, 400 for one that cannot be read as the id column's type."""
    from ig_airflow.analysis.row_explanation import explain_prediction, parse_row_id

    context: dict[str, Any] = {"dag_id": dag_id, "dag_run_id": dag_run_id, "index": index, "row_id": row_id}
    status = 200
    if row_id.strip():
        try:
            explanation = explain_prediction(run_uri, parse_row_id(row_id))
            context["explanation"] = _explanation_view(explanation)
        except (IGAirflowError, ValueError) as exc:
            context["error"] = str(exc)
            status = 404 if "no row with" in str(exc) else 400
    return render("why.html", **context), status


def _explanation_view(explanation: Any) -> dict[str, Any]:
    view = explanation.to_dict()
    contributions = view.pop("contributions")
    largest = max((abs(c["attribution"]) for c in contributions), default=0.0) or 1.0
    for item in contributions:
        item["width"] = round(50 * abs(item["attribution"]) / largest, 1)
    view["contributions"] = contributions
    return view


def history_page(dag_id: str, dag_run_id: str, history_uri: str | None) -> str:
    """The drift history: one line per recorded run (partition key, model version, run id) with
    the importance of the features that rank highest over the whole history."""
    from ig_airflow.analysis.drift import RUN_COLUMNS, read_history

    if not history_uri or not exists(history_uri):
        return render("history.html", dag_id=dag_id, dag_run_id=dag_run_id, features=[], runs=[])
    history = read_history(history_uri)
    features = list(history.groupby("feature")["share"].mean().nlargest(HISTORY_FEATURES).index)
    wide = history.pivot_table(
        index=[*RUN_COLUMNS, "recorded_at"], columns="feature", values="mean_abs_attribution", aggfunc="first"
    )
    wide = wide.reset_index().sort_values(["recorded_at", "run_key"])
    runs = [
        {
            **{c: str(r[c]) for c in [*RUN_COLUMNS, "recorded_at"]},
            "values": [None if pd.isna(r.get(f)) else float(r[f]) for f in features],
        }
        for r in wide.to_dict(orient="records")
    ]
    return render("history.html", dag_id=dag_id, dag_run_id=dag_run_id, features=features, runs=runs)
