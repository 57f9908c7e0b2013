"""Plots and an HTML report of a run: global importance, drift against the reference run,
importance over time (from the history table), and waterfall plots of single rows.

``build_report(run_uri)`` reads the attributions dataset, ``summary/``, ``drift/`` and the
history table of a run folder (a local path or any fsspec URI) and writes ``report/report.html``
with its PNGs beside it (plain files linked by relative paths, so they are kept for other uses).

Every string from the run (feature, layer and column names, ids, run keys) is untrusted: the
page is rendered by an autoescaping Jinja2 template (:mod:`ig_airflow.analysis.report_template`)
and the plots are drawn with literal text (:func:`literal_text`: no mathtext for ``$...$``).
PNGs are rendered in memory and every file is written atomically through fsspec.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Iterator
from contextlib import contextmanager
from io import BytesIO
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ig_airflow.analysis.aggregation import feature_summary, primary_rows, read_column
from ig_airflow.analysis.report_template import render_report
from ig_airflow.dataset import open_dataset
from ig_airflow.io import atomic_write_bytes, exists, read_json, read_parquet
from ig_airflow.layout import ReportLayout, RunLayout
from ig_airflow.results import attribution_column

log = logging.getLogger(__name__)
LITERAL_TEXT = {"text.parse_math": False, "text.usetex": False}
DPI = 110
SUMMARY_COLUMNS = ["rank", "feature", "mean_abs_attribution", "mean_attribution", "share"]
DRIFT_COLUMNS = [
    "feature",
    "reference_share",
    "current_share",
    "share_change",
    "js_distance",
    "psi",
    "wasserstein",
    "reference_rank",
    "current_rank",
]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@contextmanager
def literal_text() -> Iterator[None]:
    """Matplotlib settings under which every text (titles, axis and tick labels, legends) is
    drawn as the literal string: no mathtext for ``$...$``, no TeX."""
    import matplotlib

    with matplotlib.rc_context(LITERAL_TEXT):
        yield


@contextmanager
def _canvas(uri: str, height: float) -> Iterator[Any]:
    """Axes of a new 7-inch-wide figure with literal text; on exit the figure is rendered to
    PNG in memory and written atomically to ``uri``."""
    plt = _pyplot()
    with literal_text():
        fig, ax = plt.subplots(figsize=(7, height))
        try:
            yield ax
            fig.tight_layout()
            buffer = BytesIO()
            fig.savefig(buffer, format="png", dpi=DPI)
        finally:
            plt.close(fig)
    atomic_write_bytes(uri, buffer.getvalue())


def plot_importance(summary: pd.DataFrame, uri: str, title: str = "Global importance") -> None:
    """Horizontal bars of mean |attribution| per feature, signed mean as a marker."""
    data = summary.sort_values("mean_abs_attribution")
    y = np.arange(len(data))
    with _canvas(uri, 0.35 * len(data) + 1.2) as ax:
        ax.barh(y, data["mean_abs_attribution"], color="#4c72b0", label="mean |attribution|")
        ax.scatter(data["mean_attribution"], y, color="#dd8452", zorder=3, label="mean attribution")
        ax.set_yticks(y, [str(f) for f in data["feature"]])
        ax.axvline(0, color="black", linewidth=0.6)
        ax.set_xlabel("attribution (change in explained score)")
        ax.set_title(title)
        ax.legend(loc="lower right", fontsize=8)


def plot_drift(features: pd.DataFrame, uri: str, alerted: set[str]) -> None:
    """Share of total importance per feature, reference vs current; alerted features in red."""
    data = features.sort_values("current_share")
    y = np.arange(len(data))
    with _canvas(uri, 0.35 * len(data) + 1.2) as ax:
        ax.barh(y - 0.2, data["reference_share"], height=0.4, color="#9fb4d8", label="reference")
        colors = ["#c44e52" if f in alerted else "#4c72b0" for f in data["feature"]]
        ax.barh(y + 0.2, data["current_share"], height=0.4, color=colors, label="current")
        ax.set_yticks(y, [str(f) for f in data["feature"]])
        ax.set_xlabel("share of total mean |attribution|")
        ax.set_title("Attribution drift: reference vs current (red: alert)")
        ax.legend(loc="lower right", fontsize=8)


def plot_over_time(history: pd.DataFrame, uri: str, top: int = 6) -> None:
    """Mean |attribution| per run for the features most important on average."""
    pivot = history.pivot_table(index="run_key", columns="feature", values="mean_abs_attribution")
    keep = pivot.mean().sort_values(ascending=False).index[:top]
    x = np.arange(len(pivot))
    with _canvas(uri, 3.6) as ax:
        for feature in keep:
            ax.plot(x, pivot[feature].to_numpy(), marker="o", label=str(feature))
        ax.set_xticks(x, [str(k) for k in pivot.index])
        ax.set_ylabel("mean |attribution|")
        ax.set_title("Importance over time")
        ax.tick_params(axis="x", rotation=30)
        ax.legend(fontsize=8, ncol=2)


def plot_waterfall(row: pd.Series, features: list[str], uri: str, label: str, max_features: int = 10) -> None:
    """From the baseline prediction to the row's prediction, one step per feature."""
    values = pd.Series({f: row[attribution_column(f)] for f in features}, dtype=np.float64)
    order = values.abs().sort_values(ascending=False).index
    names = [str(f) for f in order[:max_features]]
    steps = list(values[order[:max_features]].to_numpy())
    if len(order) > max_features:
        names.append(f"{len(order) - max_features} other features")
        steps.append(float(values[order[max_features:]].sum()))
    start, end = float(row["baseline_prediction"]), float(row["prediction"])
    with _canvas(uri, 0.4 * len(steps) + 1.5) as ax:
        position = start
        for i, value in enumerate(steps):
            ax.barh(i, value, left=position, color="#55a868" if value >= 0 else "#c44e52")
            position += value
        ax.set_yticks(range(len(steps)), names)
        ax.invert_yaxis()
        ax.axvline(start, color="grey", linestyle="--", linewidth=0.8)
        ax.axvline(end, color="black", linewidth=0.8)
        ax.set_xlabel(f"explained score: baseline {start:.3f} -> prediction {end:.3f}")
        ax.set_title(f"Waterfall for {label}")


def top_rows(uri: str, n: int, id_columns: list[str], ids: list[Any] | None = None) -> pd.DataFrame:
    """The ``n`` rows with the highest predictions (or the rows with the given ids), reading only
    the prediction column and then those rows."""
    attributions = open_dataset(uri)
    if ids:
        found = [attributions.find({id_columns[0]: value}) for value in ids]
        return pa.concat_tables(found).to_pandas() if found else attributions.schema.empty_table().to_pandas()
    keep = np.argsort(-read_column(attributions, "prediction"), kind="stable")[:n]
    return pa.concat_tables([attributions.read_rows(int(i), int(i) + 1) for i in keep]).to_pandas()


def build_report(
    run_uri: str,
    id_columns: list[str] | None = None,
    history_uri: str | None = None,
    waterfall_rows: int = 3,
    waterfall_ids: list[Any] | None = None,
) -> str:
    """Write ``<run_uri>/report/`` (PNGs + ``report.html``) on any fsspec URI; returns the
    page's URI."""
    layout = RunLayout(run_uri)
    report = layout.report
    summary_uri = layout.summary.table("feature")
    summary = read_parquet(summary_uri).to_pandas() if exists(summary_uri) else None
    if summary is None or "target" in summary.columns:  # a multi-target run: each row's first target
        summary = feature_summary(layout.attributions, primary_rows(layout.attributions))
    plot_importance(summary, report.image("importance.png"))
    rows = top_rows(layout.attributions, waterfall_rows, id_columns or [], waterfall_ids)
    context = {
        "title": f"ig_airflow report: {str(run_uri).rstrip('/').rpartition('/')[2]}",
        "importance": {
            "figure": _figure("Global importance", "importance.png"),
            "table": _table(summary[SUMMARY_COLUMNS]),
        },
        "layers": _layer_sections(layout.summary.table("layer"), report),
        "drift": _drift_section(read_json(layout.drift.json), report) if exists(layout.drift.json) else None,
        "over_time": _over_time_figure(history_uri, report),
        "waterfalls": _waterfalls(rows, list(summary["feature"]), id_columns or [], report),
    }
    atomic_write_bytes(report.html, render_report(context).encode("utf-8"))
    log.info("report written to %s", report.html)
    return report.html


def _drift_section(drift: dict[str, Any], report: ReportLayout) -> dict[str, Any]:
    """The reference, the alerts, NDCG and rank correlation, the drift figure and table."""
    alerts = drift.get("alerts", [])
    section: dict[str, Any] = {
        "reference": str(drift.get("reference")),
        "alerts": [
            {
                "metric": str(a["metric"]),
                "value": _cell(a["value"]),
                "threshold": str(a["threshold"]),
                "features": [str(f) for f in a["features"]],
            }
            for a in alerts
        ],
        "metrics": None,
    }
    if not drift.get("features"):
        return section
    features = pd.DataFrame(drift["features"])
    plot_drift(features, report.image("drift.png"), {f for a in alerts for f in a["features"]})
    section["metrics"] = {
        "ndcg": _cell(drift["ndcg_at_k"]),
        "spearman": _cell(drift["spearman"]),
        "entered": [str(f) for f in drift["entered_top_k"]],
        "left": [str(f) for f in drift["left_top_k"]],
    }
    section["figure"] = _figure("Reference vs current", "drift.png")
    section["table"] = _table(features[DRIFT_COLUMNS])
    return section


def _over_time_figure(history_uri: str | None, report: ReportLayout) -> dict[str, str] | None:
    """Importance over time, when the history table holds at least two runs."""
    if not history_uri or not exists(history_uri):
        return None
    history = read_parquet(history_uri).to_pandas()
    if history["run_key"].nunique() < 2:
        return None
    plot_over_time(history, report.image("importance_over_time.png"))
    return _figure("Importance over time", "importance_over_time.png")


def _waterfalls(
    rows: pd.DataFrame, features: list[str], id_columns: list[str], report: ReportLayout
) -> list[dict[str, str]]:
    """One waterfall figure per row, captioned with its ids."""
    figures = []
    for i, (_, row) in enumerate(rows.iterrows()):
        label = ", ".join(f"{c}={row[c]}" for c in id_columns) or f"row {i}"
        name = f"waterfall_{i}.png"
        plot_waterfall(row, features, report.image(name), label)
        figures.append(_figure(label, name))
    return figures


def _layer_sections(uri: str, report: ReportLayout, top: int = 20) -> list[dict[str, Any]]:
    """Per hidden layer (``ig.layer_attributions``): the top units' importance and how many
    units got no attribution at all (e.g. ReLU units dead on every explained row)."""
    if not exists(uri):
        return []
    units = read_parquet(uri).to_pandas()
    sections = []
    for i, (layer, group) in enumerate(units.groupby("layer", sort=True)):
        shown = group.nsmallest(top, "rank").assign(feature=lambda g: "unit " + g["unit"].astype(str))
        name = f"layer_{i}.png"
        title = f"Layer {layer}: top {len(shown)} of {len(group)} units"
        plot_importance(shown, report.image(name), title=title)
        silent = int((group["mean_abs_attribution"] == 0).sum())
        figure = _figure(f"Layer {layer}", name)
        sections.append({"name": str(layer), "units": len(group), "silent": silent, "figure": figure})
    return sections


def _figure(caption: str, src: str) -> dict[str, str]:
    return {"caption": caption, "src": src}


def _cell(value: Any) -> str:
    """A number or string as table text: floats with 4 decimals, integers and the rest as is."""
    if isinstance(value, numbers.Integral):
        return str(value)
    if isinstance(value, numbers.Real):
        return f"{float(value):.4f}"
    return str(value)


def _table(frame: pd.DataFrame) -> dict[str, Any]:
    """Column names and formatted rows, for the template to render (and escape)."""
    return {
        "columns": [str(c) for c in frame.columns],
        "rows": [[_cell(v) for v in row] for row in frame.itertuples(index=False, name=None)],
    }
