"""Plots and an HTML report of a run: global importance, drift against the reference run,
importance over time (from the history table), and waterfall plots of single rows.

``build_report(run_uri)`` reads ``attributions.parquet``, ``summary/``, ``drift/`` and the
history table of a run directory and writes ``report/report.html`` with its PNGs beside it
(the images are plain files linked by relative paths, so the PNGs are kept for other uses).
"""

from __future__ import annotations

import html
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ig_airflow.analysis.aggregation import feature_summary, read_column
from ig_airflow.io import exists, read_json, read_parquet
from ig_airflow.layout import RunLayout
from ig_airflow.results import attribution_column

log = logging.getLogger(__name__)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_importance(summary: pd.DataFrame, path: Path, title: str = "Global importance") -> None:
    """Horizontal bars of mean |attribution| per feature, signed mean as a marker."""
    plt = _pyplot()
    data = summary.sort_values("mean_abs_attribution")
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(data) + 1.2))
    ax.barh(data["feature"], data["mean_abs_attribution"], color="#4c72b0", label="mean |attribution|")
    ax.scatter(data["mean_attribution"], data["feature"], color="#dd8452", zorder=3, label="mean attribution")
    ax.axvline(0, color="black", linewidth=0.6)
    ax.set_xlabel("attribution (change in explained score)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_drift(features: pd.DataFrame, path: Path, alerted: set[str]) -> None:
    """Share of total importance per feature, reference vs current; alerted features in red."""
    plt = _pyplot()
    data = features.sort_values("current_share")
    y = np.arange(len(data))
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(data) + 1.2))
    ax.barh(y - 0.2, data["reference_share"], height=0.4, color="#9fb4d8", label="reference")
    colors = ["#c44e52" if f in alerted else "#4c72b0" for f in data["feature"]]
    ax.barh(y + 0.2, data["current_share"], height=0.4, color=colors, label="current")
    ax.set_yticks(y, data["feature"])
    ax.set_xlabel("share of total mean |attribution|")
    ax.set_title("Attribution drift: reference vs current (red: alert)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_over_time(history: pd.DataFrame, path: Path, top: int = 6) -> None:
    """Mean |attribution| per run for the features most important on average."""
    plt = _pyplot()
    pivot = history.pivot_table(index="run_key", columns="feature", values="mean_abs_attribution")
    keep = pivot.mean().sort_values(ascending=False).index[:top]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for feature in keep:
        ax.plot(pivot.index, pivot[feature], marker="o", label=feature)
    ax.set_ylabel("mean |attribution|")
    ax.set_title("Importance over time")
    ax.tick_params(axis="x", rotation=30)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_waterfall(
    row: pd.Series, features: list[str], path: Path, label: str, max_features: int = 10
) -> None:
    """From the baseline prediction to the row's prediction, one step per feature."""
    plt = _pyplot()
    values = pd.Series({f: row[attribution_column(f)] for f in features})
    order = values.abs().sort_values(ascending=False).index
    shown = values[order[:max_features]]
    rest = values[order[max_features:]].sum()
    if len(order) > max_features:
        shown[f"{len(order) - max_features} other features"] = rest
    start = float(row["baseline_prediction"])
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(shown) + 1.5))
    position = start
    for i, value in enumerate(shown.to_numpy()):
        ax.barh(i, value, left=position, color="#55a868" if value >= 0 else "#c44e52")
        position += value
    ax.set_yticks(range(len(shown)), list(shown.index))
    ax.invert_yaxis()
    ax.axvline(start, color="grey", linestyle="--", linewidth=0.8)
    ax.axvline(float(row["prediction"]), color="black", linewidth=0.8)
    ax.set_xlabel(f"explained score: baseline {start:.3f} -> prediction {float(row['prediction']):.3f}")
    ax.set_title(f"Waterfall for {label}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def top_rows(uri: str, n: int, id_columns: list[str], ids: list[Any] | None = None) -> pd.DataFrame:
    """The ``n`` rows with the highest predictions (or the rows with the given ids)."""
    if ids:
        table = read_parquet(uri).to_pandas()
        return table[table[id_columns[0]].isin(ids)]
    predictions = read_column(uri, "prediction")
    keep = np.argsort(-predictions, kind="stable")[:n]
    return read_parquet(uri).take(keep).to_pandas()


def build_report(
    run_uri: str,
    id_columns: list[str] | None = None,
    history_uri: str | None = None,
    waterfall_rows: int = 3,
    waterfall_ids: list[Any] | None = None,
) -> str:
    """Write ``<run_uri>/report/`` (PNGs + ``report.html``); returns the HTML path."""
    layout = RunLayout(run_uri)
    out = Path(layout.report.root)
    out.mkdir(parents=True, exist_ok=True)
    summary_path = layout.summary.table("feature")
    summary = (
        read_parquet(summary_path).to_pandas()
        if exists(summary_path)
        else feature_summary(layout.attributions)
    )
    plot_importance(summary, out / "importance.png")
    sections = [
        _figure("Global importance", "importance.png"),
        _table(summary[["rank", "feature", "mean_abs_attribution", "mean_attribution", "share"]]),
    ]
    sections += _layer_sections(Path(layout.summary.table("layer")), out)
    if exists(layout.drift.json):
        sections += _drift_sections(read_json(layout.drift.json), out)
    if history_uri and exists(history_uri):
        history = read_parquet(history_uri).to_pandas()
        if history["run_key"].nunique() >= 2:
            plot_over_time(history, out / "importance_over_time.png")
            sections.append(_figure("Importance over time", "importance_over_time.png"))
    rows = top_rows(layout.attributions, waterfall_rows, id_columns or [], waterfall_ids)
    sections += _waterfall_sections(rows, list(summary["feature"]), id_columns or [], out)
    page = REPORT_TEMPLATE.format(
        title=html.escape(f"ig_airflow report: {Path(run_uri).name}"), body="\n".join(sections)
    )
    Path(layout.report.html).write_text(page)
    log.info("report written to %s", layout.report.html)
    return layout.report.html


def _drift_sections(drift: dict[str, Any], out: Path) -> list[str]:
    """The reference, the alerts, NDCG and rank correlation, the per-feature drift table."""
    alerts = drift.get("alerts", [])
    sections = [f"<h2>Drift</h2><p>reference: <code>{html.escape(str(drift.get('reference')))}</code></p>"]
    if alerts:
        items = "".join(
            f"<li><b>{html.escape(a['metric'])}</b> = {a['value']:.4f} (threshold {a['threshold']}) "
            f"{html.escape(', '.join(a['features']))}</li>"
            for a in alerts
        )
        sections.append(f"<div class='alert'><h3>{len(alerts)} alert(s)</h3><ul>{items}</ul></div>")
    else:
        sections.append("<p class='ok'>No drift alert.</p>")
    if not drift.get("features"):
        return sections
    features = pd.DataFrame(drift["features"])
    plot_drift(features, out / "drift.png", {f for a in alerts for f in a["features"]})
    sections.append(
        f"<p>NDCG@k = {drift['ndcg_at_k']:.4f}, Spearman = {drift['spearman']:.4f}; "
        f"entered top k: {drift['entered_top_k']}, left: {drift['left_top_k']}</p>"
    )
    sections.append(_figure("Reference vs current", "drift.png"))
    columns = [
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
    sections.append(_table(features[columns]))
    return sections


def _waterfall_sections(
    rows: pd.DataFrame, features: list[str], id_columns: list[str], out: Path
) -> list[str]:
    sections = ["<h2>Waterfalls</h2>"]
    for i, (_, row) in enumerate(rows.iterrows()):
        label = ", ".join(f"{c}={row[c]}" for c in id_columns) or f"row {i}"
        name = f"waterfall_{i}.png"
        plot_waterfall(row, features, out / name, label)
        sections.append(_figure(label, name))
    return sections


def _layer_sections(path: Path, out: Path, top: int = 20) -> list[str]:
    """Per hidden layer (``ig.layer_attributions``): the top units' importance and how many
    units got no attribution at all (e.g. ReLU units dead on every explained row)."""
    if not path.exists():
        return []
    units = read_parquet(str(path)).to_pandas()
    sections = []
    for i, (layer, group) in enumerate(units.groupby("layer", sort=True)):
        shown = group.nsmallest(top, "rank").assign(feature=lambda g: "unit " + g["unit"].astype(str))
        name = f"layer_{i}.png"
        plot_importance(shown, out / name, title=f"Layer {layer}: top {len(shown)} of {len(group)} units")
        silent = int((group["mean_abs_attribution"] == 0).sum())
        sections.append(f"<h2>Layer <code>{html.escape(str(layer))}</code></h2>")
        sections.append(f"<p>{len(group)} units; {silent} with no attribution on any explained row.</p>")
        sections.append(_figure(f"Layer {layer}", name))
    return sections


def _figure(caption: str, src: str) -> str:
    text = html.escape(caption)
    return f"<figure><img src='{src}' alt='{text}'><figcaption>{text}</figcaption></figure>"


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, float_format=lambda v: f"{v:.4f}", border=0, classes="data")


REPORT_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; max-width: 980px; margin: 2em auto; color: #222; }}
table.data {{ border-collapse: collapse; font-size: 13px; margin: 1em 0; }}
table.data td, table.data th {{ padding: 3px 8px; border-bottom: 1px solid #ddd; text-align: right; }}
.alert {{ background: #fdecea; border-left: 4px solid #c44e52; padding: 0.5em 1em; }}
.ok {{ color: #2e7d32; }}
figure {{ margin: 1em 0; }} img {{ max-width: 100%; }}
</style></head>
<body><h1>{title}</h1>
{body}
<script>
window.addEventListener("load", function () {{
  var images = Array.prototype.slice.call(document.images);
  var loaded = images.filter(function (i) {{ return i.complete && i.naturalWidth > 0; }}).length;
  document.body.setAttribute("data-images", images.length);
  document.body.setAttribute("data-images-loaded", loaded);
}});
</script>
</body></html>
"""
