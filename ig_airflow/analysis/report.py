"""The HTML report of a run: one self-contained page (every image embedded as a ``data:`` PNG,
no script or style from elsewhere), readable offline and by people who did not build the run.

``build_report(run_uri)`` reads the run folder (a local path or any fsspec URI): the manifest,
the attributions dataset and the rows it explained, ``summary/``, ``drift/``, ``quality/``, the
validation report and quarantine, and the history table; it writes ``report/report.html``.
Sections, in order:

- **At a glance**: rows explained and quarantined, share converged, the drift state (alerts,
  no alert, or *no reference yet* on a first run: never a green all-clear without a reference)
  and the quality checks.
- **Global importance** (bars and table) and a **beeswarm**: a sample of rows, one dot per row
  and feature at its attribution, coloured by the row's value of the feature.
- **Categories**: mean attribution per category, by its label.
- **Drift**: each alert with its evidence (the alert's own fields, such as an effect, interval
  or p-value when the drift stage records them, and each named feature's reference vs current
  share and rank), NDCG@k, Spearman and the per-feature table.
- **Where the change comes from** (against another model version): the model's share of the
  change and each feature's model and data parts (drift.json's ``decomposition``), or why not.
- **Importance over time** from the history table, with the intervals the history records.
- **What drives errors** (runs with ``ig.loss``): the features by mean loss attribution and, from
  the history table, over time (:mod:`ig_airflow.analysis.loss`).
- **Quality** (when the quality stage ran), **quarantine** (counts by reason, values mapped to
  defaults, example rows with the values that failed) and **completeness** (share converged,
  the rows with the largest completeness error).
- **Waterfalls**: from the baseline prediction to the row's prediction, each feature's step
  labelled with the row's value (categories by their label), with the row's values and
  baselines in a table.

Every image is also written beside the page as a PNG (``importance.png``, ...), for other uses.
Every string from the run (feature, layer, category and column names, ids, reasons, run keys)
is untrusted: the page is rendered by an autoescaping Jinja2 template
(:mod:`ig_airflow.analysis.report_template`) and the plots are drawn with literal text
(:func:`literal_text`: no mathtext for ``$...$``). PNGs are rendered in memory and every file is
written atomically through fsspec.
"""

from __future__ import annotations

import base64
import logging
import numbers
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ig_airflow.analysis.aggregation import feature_summary, primary_rows, read_column
from ig_airflow.analysis.drift import RUN_COLUMNS, read_history
from ig_airflow.analysis.loss import draw_loss_importance, draw_loss_over_time, loss_history
from ig_airflow.analysis.report_template import render_report
from ig_airflow.dataset import InputDataset, open_dataset
from ig_airflow.exceptions import IGAirflowError, InputDataError
from ig_airflow.io import atomic_write_bytes, exists, read_json, read_parquet
from ig_airflow.layout import ReportLayout, RunLayout, ValidationLayout, explained_input
from ig_airflow.results import RANK_COLUMN, TARGET_COLUMN, attribution_column

log = logging.getLogger(__name__)
LITERAL_TEXT = {"text.parse_math": False, "text.usetex": False}
DPI = 110
BEESWARM_ROWS = 1000  # rows sampled for the beeswarm
BEESWARM_FEATURES = 12
WORST_ROWS = 5  # rows listed in the completeness section
QUARANTINE_EXAMPLES = 2  # example rows per quarantine reason
QUARANTINE_SCAN_ROWS = 20_000  # quarantined rows read to find examples
SUMMARY_COLUMNS = ["rank", "feature", "mean_abs_attribution", "mean_attribution", "share"]
# the per-feature drift table: columns shown when drift.json has them; "<name>_ci" is the
# interval "<name>_ci_low" .. "<name>_ci_high"
DRIFT_COLUMNS = [
    "feature",
    "reference_share",
    "current_share",
    "share_change",
    "share_change_ci",
    "share_change_p_value",
    "js_distance",
    "psi",
    "wasserstein",
    "importance_moved",
    "input_js_distance",
    "drift_impact",
    "reference_rank",
    "current_rank",
]
ALERT_FIELDS = ("metric", "value", "threshold", "features")
EVIDENCE_LABELS = {  # an alert's fields (from the drift stage's statistics) as the page names them
    "effect": "effect",
    "ci95": "95% interval of the effect",
    "min_effect": "minimum effect",
    "null_median": "null median (same population resampled)",
    "p_value": "p-value",
    "p_adjusted": "Holm-adjusted p-value",
    "cohort": "cohort",
    "segment": "segment",
}
P_VALUES = {"p_value", "p_adjusted"}
# (low, high) column pairs of an interval of mean |attribution| in the history table
INTERVAL_COLUMNS = [
    ("mean_abs_attribution_ci95_low", "mean_abs_attribution_ci95_high"),
    ("mean_abs_attribution_low", "mean_abs_attribution_high"),
    ("ci95_low", "ci95_high"),
    ("ci_low", "ci_high"),
]
INTERVAL_LISTS = ("mean_abs_attribution_ci95", "ci95")  # or one column of [low, high]
WORST_COLUMNS = ["prediction", "baseline_prediction", "completeness_error", "n_steps", "converged"]
MISSING = "(missing)"


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


@dataclass
class Png:
    """A figure's PNG bytes, set when its canvas closes."""

    data: bytes = b""


@contextmanager
def _canvas(uri: str, height: float) -> Iterator[tuple[Any, Png]]:
    """Axes of a new 7-inch-wide figure with literal text; on exit the figure is rendered to
    PNG in memory, kept in the yielded :class:`Png` and written atomically to ``uri``."""
    plt = _pyplot()
    png = Png()
    with literal_text():
        fig, ax = plt.subplots(figsize=(7, height))
        try:
            yield ax, png
            fig.tight_layout()
            buffer = BytesIO()
            fig.savefig(buffer, format="png", dpi=DPI)
        finally:
            plt.close(fig)
    png.data = buffer.getvalue()
    atomic_write_bytes(uri, png.data)


def plot_importance(
    summary: pd.DataFrame,
    uri: str,
    title: str = "Global importance",
    intervals: pd.DataFrame | None = None,
) -> bytes:
    """Horizontal bars of mean |attribution| per feature, signed mean as a marker; with
    ``intervals`` (``low``, ``high`` by feature) each bar's interval as an error bar."""
    data = summary.sort_values("mean_abs_attribution")
    y = np.arange(len(data))
    error = None
    if intervals is not None:
        bounds = intervals.reindex(data["feature"])
        mean = data["mean_abs_attribution"].to_numpy()
        below = np.clip(mean - bounds["low"].to_numpy(np.float64), 0, None)
        above = np.clip(bounds["high"].to_numpy(np.float64) - mean, 0, None)
        error = np.nan_to_num(np.stack([below, above]))
    with _canvas(uri, 0.35 * len(data) + 1.2) as (ax, png):
        ax.barh(y, data["mean_abs_attribution"], xerr=error, color="#4c72b0", label="mean |attribution|")
        ax.scatter(data["mean_attribution"], y, color="#dd8452", zorder=3, label="mean attribution")
        ax.set_yticks(y, [str(f) for f in data["feature"]])
        ax.axvline(0, color="black", linewidth=0.6)
        ax.set_xlabel("attribution (change in explained score)")
        ax.set_title(title)
        ax.legend(loc="lower right", fontsize=8)
    return png.data


def swarm_offsets(x: np.ndarray, width: float = 0.4, bins: int = 80, stack: int = 12) -> np.ndarray:
    """Vertical offsets that stack crowded points (a beeswarm): points in the same bin of ``x``
    alternate above and below the line, up to ``stack`` each way scaled to ``width``; a bin
    with more points (say every row at the baseline, attribution 0) fills the band evenly."""
    offsets = np.zeros(len(x))
    if len(x) == 0:
        return offsets
    span = float(np.nanmax(x) - np.nanmin(x)) or 1.0
    cells = np.nan_to_num(np.round(bins * (x - np.nanmin(x)) / span), nan=-1.0)
    rng = np.random.default_rng(0)
    for cell in np.unique(cells):
        members = np.flatnonzero(cells == cell)
        if len(members) > 2 * stack + 1:
            offsets[members] = rng.uniform(-stack, stack, len(members))
        else:
            layers = np.arange(len(members))
            offsets[members] = np.ceil(layers / 2) * np.where(layers % 2, 1, -1)
    return offsets * (width / stack)


def plot_beeswarm(sample: pd.DataFrame, colours: pd.DataFrame, features: list[str], uri: str) -> bytes:
    """One line of dots per feature (the most important on top): each dot a sampled row at its
    attribution, coloured by ``colours`` (0 low to 1 high; grey where unknown)."""
    plt = _pyplot()
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    cmap = plt.get_cmap("coolwarm")
    with _canvas(uri, 0.42 * len(features) + 1.6) as (ax, png):
        for i, feature in enumerate(features):
            x = sample[attribution_column(feature)].to_numpy(np.float64)
            y = len(features) - 1 - i + swarm_offsets(x)
            c = colours[feature].to_numpy(np.float64) if feature in colours else np.full(len(x), np.nan)
            known = np.isfinite(c)
            ax.scatter(x[~known], y[~known], s=7, color="#999999", linewidths=0)
            ax.scatter(x[known], y[known], s=7, c=c[known], cmap=cmap, vmin=0, vmax=1, linewidths=0)
        ax.set_yticks(range(len(features)), [str(f) for f in reversed(features)])
        ax.axvline(0, color="black", linewidth=0.6)
        ax.set_xlabel("attribution (change in explained score) of each sampled row")
        ax.set_title(f"Attributions of {len(sample)} sampled rows, coloured by the feature's value")
        bar = ax.figure.colorbar(
            ScalarMappable(Normalize(0, 1), cmap), ax=ax, ticks=[0, 1], pad=0.01, fraction=0.04, aspect=30
        )
        bar.ax.set_yticklabels(["low", "high"])
        bar.set_label("feature value")
    return png.data


def plot_drift(features: pd.DataFrame, uri: str, alerted: set[str]) -> bytes:
    """Share of total importance per feature, reference vs current; alerted features in red."""
    data = features.sort_values("current_share")
    y = np.arange(len(data))
    with _canvas(uri, 0.35 * len(data) + 1.2) as (ax, png):
        ax.barh(y - 0.2, data["reference_share"], height=0.4, color="#9fb4d8", label="reference")
        colors = ["#c44e52" if f in alerted else "#4c72b0" for f in data["feature"]]
        ax.barh(y + 0.2, data["current_share"], height=0.4, color=colors, label="current")
        ax.set_yticks(y, [str(f) for f in data["feature"]])
        ax.set_xlabel("share of total mean |attribution|")
        ax.set_title("Attribution drift: reference vs current (red: alert)")
        ax.legend(loc="lower right", fontsize=8)
    return png.data


def plot_shift(parts: pd.DataFrame, uri: str) -> bytes:
    """Each feature's change in mean |attribution| as diverging stacked bars, the model's part
    then the data's (increases to the right of zero, decreases to the left), the total a marker."""
    data = parts.iloc[::-1]
    y = np.arange(len(data))
    above, below = np.zeros(len(data)), np.zeros(len(data))
    with _canvas(uri, 0.35 * len(data) + 1.4) as (ax, png):
        for column, colour, label in (("model", "#4c72b0", "model"), ("data", "#dd8452", "data")):
            part = np.nan_to_num(pd.to_numeric(data[column], errors="coerce").to_numpy(np.float64))
            ax.barh(y, part, left=np.where(part >= 0, above, below), color=colour, label=label)
            above, below = above + np.clip(part, 0, None), below + np.clip(part, None, 0)
        total = pd.to_numeric(data["total"], errors="coerce")
        ax.scatter(total, y, color="black", marker="D", s=14, zorder=3, label="total change")
        ax.set_yticks(y, [str(f) for f in data["feature"]])
        ax.axvline(0, color="black", linewidth=0.6)
        ax.set_xlabel("change in mean |attribution| (current - reference)")
        ax.set_title("Where the change comes from: model vs data")
        ax.legend(loc="lower right", fontsize=8)
    return png.data


def history_intervals(history: pd.DataFrame) -> tuple[pd.Series, pd.Series] | None:
    """The (low, high) interval of each history row's mean |attribution|, when the history
    table records one (as two columns, or one column of ``[low, high]``); else None."""
    for low, high in INTERVAL_COLUMNS:
        if low in history and high in history:
            return pd.to_numeric(history[low], errors="coerce"), pd.to_numeric(history[high], errors="coerce")
    for name in INTERVAL_LISTS:
        if name in history:
            pairs = [v if v is not None and len(v) == 2 else (np.nan, np.nan) for v in history[name]]
            bounds = np.asarray(pairs, dtype=np.float64).reshape(-1, 2)
            return pd.Series(bounds[:, 0], history.index), pd.Series(bounds[:, 1], history.index)
    return None


def history_runs(history: pd.DataFrame) -> pd.DataFrame:
    """One row per run of the history table, in order (partition key, then when recorded), with
    a label: the key, and the model version when the history holds several."""
    runs = history.drop_duplicates(RUN_COLUMNS).sort_values(["run_key", "recorded_at"])[RUN_COLUMNS]
    several = runs["model_version"].nunique() > 1
    runs = runs.assign(
        label=[
            f"{k} ({v[:8]})" if several and v else str(k)
            for k, v in zip(runs["run_key"], runs["model_version"], strict=True)
        ]
    )
    return runs.reset_index(drop=True)


def plot_over_time(history: pd.DataFrame, uri: str, top: int = 6) -> bytes:
    """Mean |attribution| per run for the features most important on average, with the
    history's intervals as bands when it records them."""
    runs = history_runs(history)
    intervals = history_intervals(history)
    data = history.assign(_low=intervals[0], _high=intervals[1]) if intervals else history.copy()
    data = data.merge(runs.reset_index(names="_x"), on=RUN_COLUMNS)
    keep = data.groupby("feature")["mean_abs_attribution"].mean().sort_values(ascending=False).index[:top]
    with _canvas(uri, 3.8) as (ax, png):
        for feature in keep:
            line = data[data["feature"] == feature].groupby("_x").mean(numeric_only=True)
            drawn = ax.plot(line.index, line["mean_abs_attribution"], marker="o", label=str(feature))
            if intervals:
                ax.fill_between(
                    line.index, line["_low"], line["_high"], color=drawn[0].get_color(), alpha=0.2
                )
        ax.set_xticks(range(len(runs)), list(runs["label"]))
        ax.set_ylabel("mean |attribution|")
        ax.set_title("Importance over time" + (" (bands: 95% intervals)" if intervals else ""))
        ax.tick_params(axis="x", rotation=30)
        ax.legend(fontsize=8, ncol=2)
    return png.data


def plot_quality_curves(quality: dict[str, Any], kind: str, uri: str) -> bytes:
    """The mean deletion or insertion curve of each feature order (quality stage)."""
    x = np.asarray(quality["fraction_removed"])
    styles = {"ig": ("#4c72b0", "-"), "permutation": ("#dd8452", "--"), "random": ("#888888", ":")}
    with _canvas(uri, 3.2) as (ax, png):
        for name, curve in quality[kind]["curve"].items():
            color, line = styles.get(name, ("#55a868", "-."))
            area = quality[kind]["auc"][name]
            ax.plot(x, curve, color=color, linestyle=line, marker=".", label=f"{name} (AUC {area:.3f})")
        removed = "removed" if kind == "deletion" else "restored from the baseline"
        ax.set_xlabel(f"fraction of features {removed}, most important first")
        ax.set_ylabel("output, normalised (row 1, baseline 0)")
        better = "lower" if kind == "deletion" else "higher"
        ax.set_title(f"{kind.capitalize()} curves ({better} AUC is more faithful)")
        ax.legend(fontsize=8)
    return png.data


def waterfall_steps(
    row: pd.Series, features: list[str], max_features: int = 10
) -> tuple[list[str], list[float], list[str]]:
    """The features of a waterfall, largest |attribution| first (the rest summed into one
    step): their names, their attributions, and the features summed into the last step."""
    values = pd.Series({f: row[attribution_column(f)] for f in features}, dtype=np.float64)
    order = list(values.abs().sort_values(ascending=False, kind="stable").index)
    names, rest = order[:max_features], order[max_features:]
    steps = [float(values[f]) for f in names]
    if rest:
        steps.append(float(values[rest].sum()))
    return names, steps, rest


def plot_waterfall(
    row: pd.Series,
    features: list[str],
    uri: str,
    label: str,
    max_features: int = 10,
    values: dict[str, str] | None = None,
) -> bytes:
    """From the baseline prediction to the row's prediction, one step per feature, each
    labelled ``feature = value`` when the row's ``values`` (as shown) are given."""
    names, steps, rest = waterfall_steps(row, features, max_features)
    ticks = [f"{f} = {_short(values[f])}" if values and f in values else str(f) for f in names]
    if rest:
        ticks.append(f"{len(rest)} other features")
    start, end = float(row["baseline_prediction"]), float(row["prediction"])
    with _canvas(uri, 0.4 * len(steps) + 1.5) as (ax, png):
        position = start
        for i, value in enumerate(steps):
            ax.barh(i, value, left=position, color="#55a868" if value >= 0 else "#c44e52")
            position += value
        ax.set_yticks(range(len(steps)), ticks)
        ax.invert_yaxis()
        ax.axvline(start, color="grey", linestyle="--", linewidth=0.8)
        ax.axvline(end, color="black", linewidth=0.8)
        ax.set_xlabel(f"explained score: baseline {start:.3f} -> prediction {end:.3f}")
        ax.set_title(f"Waterfall for {label}")
    return png.data


def top_rows(uri: str, n: int, id_columns: list[str], ids: list[Any] | None = None) -> pd.DataFrame:
    """The ``n`` rows with the highest predictions (or the rows with the given ids), reading only
    the prediction column and then those rows."""
    attributions = open_dataset(uri)
    if ids:
        found = [attributions.find({id_columns[0]: value}) for value in ids]
        return pa.concat_tables(found).to_pandas() if found else attributions.schema.empty_table().to_pandas()
    keep = np.argsort(-read_column(attributions, "prediction"), kind="stable")[:n]
    return pa.concat_tables([attributions.read_rows(int(i), int(i) + 1) for i in keep]).to_pandas()


@dataclass
class Labels:
    """How a feature's value is shown: a category by its label (a model index mapped back
    through the artifact's vocabulary), a number with 4 significant digits."""

    categorical: set[str] = field(default_factory=set)
    by_index: dict[str, dict[int, str]] = field(default_factory=dict)
    vocabulary: dict[str, set[str]] = field(default_factory=dict)
    known: bool = True  # from the artifact's metadata (else guessed from the values' types)

    @classmethod
    def of(cls, manifest: dict[str, Any], frame: pd.DataFrame | None = None) -> Labels:
        """From the vocabularies in the run's artifact metadata; without them (an artifact
        moved, a run folder without a manifest), the text columns of ``frame`` are categories."""
        from ig_airflow.artifacts import read_metadata

        try:
            spec = read_metadata(manifest["artifact"]["uri"]).inputs
        except (KeyError, TypeError, OSError, IGAirflowError):
            text = [] if frame is None else [c for c in frame if not pd.api.types.is_numeric_dtype(frame[c])]
            return cls(set(text), known=False)
        return cls(
            {f.name for f in spec.categorical},
            {f.name: f.value_of_index() for f in spec.categorical},
            {f.name: set(f.vocabulary) for f in spec.categorical},
        )

    def show(self, feature: str, value: Any) -> str:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return MISSING
        if feature in self.categorical:
            names = self.by_index.get(feature, {})
            integral = isinstance(value, numbers.Integral) and not isinstance(value, bool)
            if integral and str(value) not in self.vocabulary.get(feature, set()) and int(value) in names:
                return names[int(value)]
            return str(value)
        return _number(value)


@dataclass
class RunView:
    """What the report's sections read from one run folder."""

    uri: str
    layout: RunLayout
    manifest: dict[str, Any]
    id_columns: list[str]
    features: list[str]
    validation_report: str  # the validation stage's report.json
    labels: Labels = field(default_factory=lambda: Labels(known=False))

    @property
    def report(self) -> ReportLayout:
        return self.layout.report

    def explained_rows(self) -> InputDataset | None:
        """The rows the run explained (validated, or its input), when the manifest names them."""
        if not self.manifest.get("input_uri"):
            return None
        try:
            return open_dataset(*explained_input(self.manifest))
        except (OSError, ValueError, InputDataError) as exc:
            log.warning("report: the explained rows of %s cannot be read (%s)", self.uri, exc)
            return None


def build_report(
    run_uri: str,
    id_columns: list[str] | None = None,
    history_uri: str | None = None,
    waterfall_rows: int = 3,
    waterfall_ids: list[Any] | None = None,
    validation_uri: str | None = None,
) -> str:
    """Write ``<run_uri>/report/report.html`` (one self-contained page; its PNGs also beside
    it) on any fsspec URI; returns the page's URI. ``validation_uri``: the validation folder
    when it is not the run's own (default: the one the manifest names, else ``<run>/validation``)."""
    view = _run_view(run_uri, id_columns, validation_uri)
    summary_uri = view.layout.summary.table("feature")
    summary = read_parquet(summary_uri).to_pandas() if exists(summary_uri) else None
    if summary is None or "target" in summary.columns:  # a multi-target run: each row's first target
        summary = feature_summary(view.layout.attributions, primary_rows(view.layout.attributions))
    view.features = list(summary["feature"])
    drift = read_json(view.layout.drift.json) if exists(view.layout.drift.json) else None
    quality = read_json(view.layout.quality.json) if exists(view.layout.quality.json) else None
    rows = top_rows(view.layout.attributions, waterfall_rows, view.id_columns, waterfall_ids)
    context = {
        "title": f"ig_airflow report: {str(run_uri).rstrip('/').rpartition('/')[2]}",
        "run": _run_facts(view),
        "importance": _importance_section(summary, view.report, drift),
        "beeswarm": _beeswarm_section(view, summary),
        "categories": _category_section(view),
        "cohorts": _cohort_sections(view, drift),
        "layers": _layer_sections(view.layout.summary.table("layer"), view.report),
        "drift": _drift_section(drift, view.report),
        "shift": _shift_section(drift, view.report),
        "over_time": _over_time_section(history_uri, view.report),
        "errors": _errors_section(view, history_uri),
        "quality": _quality_section(quality, view.report) if quality else None,
        "quarantine": _quarantine_section(view),
        "completeness": _completeness_section(view),
        "waterfalls": _waterfalls(rows, view),
    }
    context["glance"] = _glance(context)
    page = view.report.html
    atomic_write_bytes(page, render_report(context).encode("utf-8"))
    log.info("report written to %s", page)
    return page


def _run_view(run_uri: str, id_columns: list[str] | None, validation_uri: str | None) -> RunView:
    layout = RunLayout(run_uri)
    manifest = read_json(layout.manifest) if exists(layout.manifest) else {}
    named = (manifest.get("validation") or {}).get("outputs", {}).get("report")
    report = ValidationLayout(validation_uri).report if validation_uri else named or layout.validation.report
    ids = list(id_columns or manifest.get("id_columns") or [])
    return RunView(str(run_uri), layout, manifest, ids, [], report, Labels.of(manifest))


def _run_facts(view: RunView) -> dict[str, Any]:
    """Which run this is: its partition, model version and run id, and its row counts."""
    run = view.manifest.get("run") or {}
    explained = (view.manifest.get("rows") or {}).get("explained")
    if explained is None:
        explained = open_dataset(view.layout.attributions).num_rows
    facts = {"rows explained": _cell(explained)}
    for key in ("partition", "model_version", "run_id"):
        if run.get(key):
            facts[key.replace("_", " ")] = str(run[key])
    return {"facts": [[k, v] for k, v in facts.items()], "explained": int(explained)}


def _importance_section(
    summary: pd.DataFrame, report: ReportLayout, drift: dict[str, Any] | None
) -> dict[str, Any]:
    """The importance figure and table, with the 95% interval of each feature's mean
    |attribution| when the drift stage measured it (``current_mean_abs_ci_low``/``_high``)."""
    features = pd.DataFrame((drift or {}).get("features") or [])
    intervals = None
    if {"feature", "current_mean_abs_ci_low", "current_mean_abs_ci_high"} <= set(features.columns):
        intervals = features.set_index("feature")[["current_mean_abs_ci_low", "current_mean_abs_ci_high"]]
        intervals.columns = ["low", "high"]
    data = plot_importance(summary, report.image("importance.png"), intervals=intervals)
    table = summary[SUMMARY_COLUMNS].copy()
    if intervals is not None:
        bounds = intervals.reindex(table["feature"])
        table.insert(
            3, "95% interval", [[lo, hi] for lo, hi in zip(bounds["low"], bounds["high"], strict=True)]
        )
    caption = "Global importance: mean |attribution| per feature"
    return {
        "figure": _figure(
            caption + (" (whiskers: 95% intervals)" if intervals is not None else ""), "importance.png", data
        ),
        "table": _table(table),
        "intervals": intervals is not None,
    }


def _beeswarm_section(view: RunView, summary: pd.DataFrame) -> dict[str, Any]:
    """The beeswarm of a sample of rows, coloured by their values when the explained rows are
    readable (else grey, and a sentence saying so)."""
    sample, values = _sample(view)
    features = list(summary.sort_values("rank")["feature"])[:BEESWARM_FEATURES]
    if values is not None and not view.labels.known:
        view.labels = Labels.of(view.manifest, values)
    colours = value_colours(values, sample, view.labels.categorical) if values is not None else pd.DataFrame()
    data = plot_beeswarm(sample, colours, features, view.report.image("beeswarm.png"))
    categorical = [f for f in features if f in view.labels.categorical and f in colours]
    caption = f"Beeswarm of {len(sample)} rows sampled from the run"
    return {
        "figure": _figure(caption, "beeswarm.png", data),
        "rows": len(sample),
        "coloured": values is not None,
        "categorical": categorical,
    }


def _sample(view: RunView, n: int = BEESWARM_ROWS, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Up to ``n`` rows' attributions (each row's first target) and, when the explained rows
    can be read and line up with the attributions, those rows' feature values."""
    attributions = open_dataset(view.layout.attributions)
    names = attributions.schema.names
    eligible = (
        np.flatnonzero(read_column(attributions, RANK_COLUMN) == 1)
        if RANK_COLUMN in names
        else np.arange(attributions.num_rows)
    )
    rng = np.random.default_rng(seed)
    positions = np.sort(rng.choice(eligible, min(n, len(eligible)), replace=False))
    ids = [c for c in view.id_columns if c in names]
    sample = attributions.take(positions, [*ids, *[attribution_column(f) for f in view.features]]).to_pandas()
    inputs = view.explained_rows()
    if inputs is None or not inputs.num_rows or attributions.num_rows % inputs.num_rows:
        return sample, None
    per_row = attributions.num_rows // inputs.num_rows  # each input row once per target
    features = [f for f in view.features if f in inputs.schema.names]
    rows = inputs.take(positions // per_row, [*ids, *features]).to_pandas()
    if any(rows[c].tolist() != sample[c].tolist() for c in ids):
        log.warning("report: the explained rows of %s are not in the attributions' order", view.uri)
        return sample, None
    return sample, rows[features].reset_index(drop=True)


def value_colours(values: pd.DataFrame, attributions: pd.DataFrame, categorical: set[str]) -> pd.DataFrame:
    """Each row's colour per feature in [0, 1]: a number by its percentile among the sampled
    rows, a category by where its mean attribution in the sample ranks among the feature's
    categories (NaN: missing)."""
    colours = {}
    for feature in values.columns:
        column = values[feature]
        if feature in categorical or not pd.api.types.is_numeric_dtype(column):
            known = column.notna()
            text = column[known].astype(str)
            means = (
                attributions.loc[known[known].index, attribution_column(feature)]
                .groupby(text.to_numpy())
                .mean()
            )
            order = means.rank(method="dense")
            scale = (order - 1) / max(float(order.max()) - 1, 1.0)
            colours[feature] = text.map(scale).reindex(column.index)
        else:
            colours[feature] = pd.to_numeric(column, errors="coerce").rank(pct=True)
    return pd.DataFrame(colours, index=values.index)


def _category_section(view: RunView, top: int = 5, min_share: float = 0.01) -> dict[str, Any] | None:
    """Per categorical feature, the categories with the largest mean |attribution| among those
    with at least ``min_share`` of the rows (a category seen twice says little), by label."""
    uri = view.layout.summary.table("category")
    if not exists(uri):
        return None
    categories = read_parquet(uri).to_pandas()
    if not len(categories):
        return None
    keys = ["feature", *(["target"] if "target" in categories else [])]
    common = categories["rows"] >= min_share * categories.groupby(keys)["rows"].transform("sum")
    shown = (
        categories[common]
        .sort_values("mean_abs_attribution", ascending=False, kind="stable")
        .groupby(keys, sort=True)
        .head(top)
        .sort_values([*keys, "mean_abs_attribution"], ascending=[*[True] * len(keys), False], kind="stable")
    )
    shown = shown.assign(
        value=[view.labels.show(f, v) for f, v in zip(shown["feature"], shown["value"], strict=True)]
    )
    columns = [*keys, "value", "rows", "mean_attribution", "mean_abs_attribution"]
    counts = categories.groupby("feature").size()
    return {
        "table": _table(shown[columns]),
        "top": top,
        "features": int(len(counts)),
        "min_share": _percent(min_share),
    }


def plot_cohort_shares(frame: pd.DataFrame, features: list[str], uri: str, title: str) -> bytes:
    """Each segment's share of its importance per feature (rows: segments, columns: features)."""
    segments = list(dict.fromkeys(frame["segment"]))
    grid = (
        frame.pivot_table(index="segment", columns="feature", values="share", sort=False)
        .reindex(index=segments, columns=features)
        .to_numpy(np.float64)
    )
    with _canvas(uri, 0.4 * len(segments) + 1.9) as (ax, png):
        image = ax.imshow(grid, aspect="auto", cmap="Blues", vmin=0)
        ax.set_xticks(range(len(features)), [_short(str(f), 16) for f in features], rotation=35, ha="right")
        ax.set_yticks(range(len(segments)), [_short(str(s)) for s in segments])
        dark = 0.6 * np.nanmax(grid, initial=0.0)
        for (i, j), value in np.ndenumerate(grid):
            if np.isfinite(value):
                colour = "white" if value > dark else "black"
                ax.text(j, i, f"{value:.0%}", ha="center", va="center", fontsize=7, color=colour)
        ax.set_title(title)
        ax.figure.colorbar(image, ax=ax, label="share of the segment's importance")
    return png.data


def _segment_row(segment: Any, part: pd.DataFrame, compared: dict[str, Any]) -> list[str]:
    """One segment of a cohort's table: rows, top three features by share, and its drift entry's
    reference rows, NDCG@k with its interval and the features that entered its top k."""
    leading = part.nsmallest(3, "rank")
    ndcg = compared.get("ndcg_at_k")
    return [
        str(segment),
        _cell(int(part["rows"].iloc[0])),
        ", ".join(f"{f} ({_percent(v)})" for f, v in zip(leading["feature"], leading["share"], strict=True)),
        _cell(compared.get("reference_rows")),
        f"{_cell(ndcg)} {_cell(compared.get('ndcg_at_k_ci95'))}" if ndcg is not None else "-",
        ", ".join(compared.get("entered_top_k") or []) or "-",
    ]


def _cohort_sections(view: RunView, drift: dict[str, Any] | None, top: int = 8) -> list[dict[str, Any]]:
    """Per cohort (``cohorts`` in the config): each segment's share of importance over the run's
    top features, and its rows, top features and (with drift) NDCG@k against the reference."""
    uri = view.layout.summary.table("cohort")
    if not exists(uri):
        return []
    frame = read_parquet(uri).to_pandas()
    compared = {(c["cohort"], c["segment"]): c for c in (drift or {}).get("cohorts") or []}
    features = view.features[:top]
    sections = []
    for i, (column, cohort) in enumerate(frame.groupby("cohort", sort=False)):
        name = f"cohort_{i}.png"
        title = f"Share of importance by {column}"
        data = plot_cohort_shares(cohort, features, view.report.image(name), title)
        rows = [
            _segment_row(segment, part, compared.get((column, segment), {}))
            for segment, part in cohort.groupby("segment", sort=False)
        ]
        columns = [
            "segment",
            "rows",
            "top features (share)",
            "reference rows",
            "NDCG@k [95% CI]",
            "entered top-k",
        ]
        sections.append(
            {
                "column": str(column),
                "figure": _figure(title, name, data),
                "table": {"columns": columns, "rows": rows},
            }
        )
    return sections


def _drift_section(drift: dict[str, Any] | None, report: ReportLayout) -> dict[str, Any]:
    """The drift state: ``not_run`` (no drift stage), ``no_reference`` (nothing to compare
    with yet: no all-clear), ``alerts`` or ``clear``; the alerts with their evidence, NDCG and
    Spearman, the drift figure and the per-feature table."""
    section: dict[str, Any] = {
        "state": "not_run",
        "reference": None,
        "note": None,
        "alerts": [],
        "metrics": None,
    }
    if drift is None:
        return section
    reference = drift.get("reference")
    section.update(reference=str(reference) if reference else None, note=drift.get("note"))
    features = pd.DataFrame(drift.get("features") or [])
    by_feature = features.set_index("feature") if len(features) else pd.DataFrame()
    alerts = drift.get("alerts") or []
    section["alerts"] = [_alert(a, by_feature) for a in alerts]
    section["state"] = "no_reference" if not reference else "alerts" if alerts else "clear"
    if not len(features):
        return section
    data = plot_drift(
        features, report.image("drift.png"), {str(f) for a in alerts for f in a.get("features", [])}
    )
    found = drift.get("global_statistics") or {}
    section["metrics"] = {
        "ndcg": _cell(drift.get("ndcg_at_k")) + _interval_text((found.get("ndcg_at_k") or {}).get("ci95")),
        "spearman": _cell(drift.get("spearman")) + _interval_text((found.get("spearman") or {}).get("ci95")),
        "entered": [str(f) for f in drift.get("entered_top_k", [])],
        "left": [str(f) for f in drift.get("left_top_k", [])],
    }
    section["figure"] = _figure("Share of importance: reference vs current", "drift.png", data)
    section["table"] = _drift_table(features)
    return section


def _shift_section(
    drift: dict[str, Any] | None, report: ReportLayout, top: int = 10
) -> dict[str, Any] | None:
    """Where the change comes from (drift.json's ``decomposition``): the model's share, the model
    and data parts of the ``top`` features' changes as bars and a table; or why there is no split.
    None when drift recorded no decomposition (no reference)."""
    found = (drift or {}).get("decomposition")
    if not isinstance(found, dict):
        return None
    if not found.get("available"):
        return {"reason": str(found.get("reason") or "not recorded")}
    parts = pd.DataFrame(found.get("features") or []).head(top)
    if not len(parts):
        return {"reason": "no feature to split"}
    table = pd.DataFrame(
        {
            "feature": parts["feature"],
            "total change": parts["total"],
            "model part": parts["model"],
            "model 95% interval": [
                list(p) for p in zip(parts["model_ci_low"], parts["model_ci_high"], strict=True)
            ],
            "data part": parts["data"],
            "data 95% interval": [
                list(p) for p in zip(parts["data_ci_low"], parts["data_ci_high"], strict=True)
            ],
        }
    )
    sample = found.get("sample_rows") or {}
    return {
        "reason": None,
        "summary": str(found.get("summary") or ""),
        "sample": f"{_cell(sample.get('current'))} + {_cell(sample.get('reference'))}",
        "figure": _figure(
            "Model and data parts of each feature's change",
            "shift.png",
            plot_shift(parts, report.image("shift.png")),
        ),
        "table": _table(table),
    }


def _interval_text(interval: Any) -> str:
    return (
        f" (95% interval {_cell(interval)})"
        if isinstance(interval, list | tuple) and len(interval) == 2
        else ""
    )


def _drift_table(features: pd.DataFrame) -> dict[str, Any]:
    """The per-feature drift table: the :data:`DRIFT_COLUMNS` that drift.json has, intervals as
    ``[low, high]``, p-values with two significant digits, ranks as whole numbers."""
    columns, cells = [], []
    for name in DRIFT_COLUMNS:
        if name.endswith("_ci") and {f"{name}_low", f"{name}_high"} <= set(features.columns):
            columns.append(name.replace("_ci", " 95% interval"))
            cells.append(
                [
                    _cell([lo, hi])
                    for lo, hi in zip(features[f"{name}_low"], features[f"{name}_high"], strict=True)
                ]
            )
        elif name in features.columns:
            show = _p if name.endswith("p_value") else _number if name.endswith("rank") else _cell
            columns.append(name)
            cells.append([show(v) for v in features[name]])
    return {"columns": columns, "rows": [list(row) for row in zip(*cells, strict=True)]}


def _alert(alert: dict[str, Any], by_feature: pd.DataFrame) -> dict[str, Any]:
    """An alert as shown: its metric, value and threshold, its other fields as evidence (an
    effect, an interval, a p-value: whatever the drift stage recorded), and each named
    feature's reference and current share and rank."""
    known = [k for k in EVIDENCE_LABELS if k in alert]
    other = [k for k in alert if k not in ALERT_FIELDS and k not in EVIDENCE_LABELS]
    evidence = [
        [EVIDENCE_LABELS.get(k, str(k)), _p(alert[k]) if k in P_VALUES else _cell(alert[k])]
        for k in [*known, *other]
    ]
    features = []
    for name in alert.get("features") or []:
        facts = ""
        if name in by_feature.index:
            f = by_feature.loc[name]
            facts = (
                f"share {_percent(f.get('reference_share'))} -> {_percent(f.get('current_share'))}, "
                f"rank {_number(f.get('reference_rank'))} -> {_number(f.get('current_rank'))}"
            )
        features.append({"name": str(name), "facts": facts})
    return {
        "metric": str(alert.get("metric")),
        "value": _cell(alert.get("value")),
        "threshold": _cell(alert.get("threshold")),
        "features": features,
        "evidence": evidence,
    }


def _over_time_section(history_uri: str | None, report: ReportLayout) -> dict[str, Any]:
    """Importance over time when the history table holds at least two runs, with the
    intervals it records; else a sentence saying why there is no figure."""
    section: dict[str, Any] = {
        "figure": None,
        "runs": 0,
        "intervals": False,
        "table": None,
        "latest": None,
        "note": None,
    }
    if not history_uri or not exists(history_uri):
        section["note"] = "No history table is configured for this run (drift.history_uri)."
        return section
    history = read_history(history_uri)
    runs = history_runs(history)
    section["runs"] = len(runs)
    if len(runs) < 2:
        section["note"] = "The history holds one run so far: importance over time needs two."
        return section
    data = plot_over_time(history, report.image("importance_over_time.png"))
    section["figure"] = _figure("Importance over time", "importance_over_time.png", data)
    intervals = history_intervals(history)
    section["intervals"] = intervals is not None
    section["note"] = None if intervals else "The history records no intervals: points only."
    if intervals:
        latest = history.assign(low=intervals[0], high=intervals[1]).merge(runs.tail(1), on=RUN_COLUMNS)
        section["table"] = _table(
            latest.sort_values("rank")[["feature", "mean_abs_attribution", "low", "high"]]
        )
        section["latest"] = str(runs["label"].iloc[-1])
    return section


def _errors_section(view: RunView, history_uri: str | None, top: int = 12) -> dict[str, Any] | None:
    """What drives errors (runs with ``ig.loss``): the features by mean loss attribution, and
    their mean loss attribution over the runs of the history table; None without loss summary."""
    uri = view.layout.summary.table("loss")
    if not exists(uri):
        return None
    summary = read_parquet(uri).to_pandas()
    totals = (read_json(view.layout.summary.json) if exists(view.layout.summary.json) else {}).get("loss", {})
    with _canvas(view.report.image("loss_importance.png"), 0.35 * min(top, len(summary)) + 1.2) as (ax, png):
        draw_loss_importance(ax, summary, top)
    columns = ["feature", "mean_loss_attribution", "mean_abs_loss_attribution", "share", "rank"]
    section: dict[str, Any] = {
        "loss": (view.manifest.get("loss") or {}).get("kind") or (view.manifest.get("ig") or {}).get("loss"),
        "mean_loss": _cell(totals.get("mean_loss")),
        "mean_baseline": _cell(totals.get("mean_loss_at_baseline")),
        "rows": _cell(totals.get("rows")),
        "converged": _percent(totals.get("share_converged")),
        "figure": _figure("What drives errors", "loss_importance.png", png.data),
        "table": _table(summary.head(top)[columns]),
        "over_time": None,
        "note": "No history table is configured for this run (drift.history_uri).",
    }
    if history_uri and exists(history_uri):
        history = read_history(history_uri)
        runs = history_runs(history)
        table = loss_history(history, runs)
        section["note"] = "The history holds loss attributions of fewer than two runs so far."
        if table is not None:
            with _canvas(view.report.image("loss_over_time.png"), 3.8) as (ax, png):
                draw_loss_over_time(ax, table, list(runs["label"]))
            section["over_time"] = _figure("What drives errors over time", "loss_over_time.png", png.data)
    return section


def _quality_section(quality: dict[str, Any], report: ReportLayout) -> dict[str, Any]:
    """The quality stage's checks, curves and numbers (:mod:`ig_airflow.quality`)."""
    figures = []
    for kind in ("deletion", "insertion"):
        data = plot_quality_curves(quality, kind, report.image(f"quality_{kind}.png"))
        figures.append(_figure(f"{kind.capitalize()} curves", f"quality_{kind}.png", data))
    areas = pd.DataFrame(
        {
            "order": list(quality["deletion"]["auc"]),
            "deletion AUC": list(quality["deletion"]["auc"].values()),
            "insertion AUC": [quality["insertion"]["auc"][k] for k in quality["deletion"]["auc"]],
        }
    )
    numbers = {
        "rows": quality["rows"],
        "barely moved": quality["rows_barely_moved"],
        "infidelity": quality["infidelity"]["mean"],
        "infidelity (normalised)": quality["infidelity"]["normalized_mean"],
        "max-sensitivity (mean)": quality["max_sensitivity"]["mean"],
    }
    if "randomisation" in quality:
        numbers["randomised-model Spearman (mean per row)"] = quality["randomisation"]["row_spearman_mean"]
    return {
        "passed": bool(quality["passed"]),
        "checks": [
            {"name": str(c["name"]), "passed": bool(c["passed"]), "detail": str(c["detail"])}
            for c in quality["checks"]
        ],
        "figures": figures,
        "table": _table(areas),
        "numbers": {"columns": ["metric", "value"], "rows": [[k, _cell(v)] for k, v in numbers.items()]},
    }


def _quarantine_section(view: RunView) -> dict[str, Any]:
    """What validation kept out: row counts, counts by reason, values mapped to defaults, and
    example rows of each reason with the values that failed."""
    section: dict[str, Any] = {
        "ran": False,
        "counts": None,
        "reasons": None,
        "mapped": None,
        "examples": None,
    }
    if not exists(view.validation_report):
        return section
    report = read_json(view.validation_report)
    rows = report.get("rows") or {}
    names = ["input", "validated", "quarantined", "mapped_to_default"]
    section.update(ran=True, quarantined=int(rows.get("quarantined") or 0), input=int(rows.get("input") or 0))
    section["counts"] = [[n.replace("_", " "), _cell(rows[n])] for n in names if n in rows]
    reasons = sorted((report.get("quarantine_reasons") or {}).items(), key=lambda kv: (-kv[1], kv[0]))
    if reasons:
        section["reasons"] = _table(pd.DataFrame(reasons, columns=["reason", "rows"]))
    mapped = [
        [str(column), view.labels.show(column, value), _cell(count)]
        for column, counts in (report.get("mapped") or {}).items()
        for value, count in counts.items()
    ]
    if mapped:
        section["mapped"] = {"columns": ["feature", "value", "rows"], "rows": mapped}
    quarantine = (report.get("outputs") or {}).get("quarantine")
    if section["quarantined"] and quarantine and exists(quarantine):
        try:
            section["examples"] = _quarantine_examples(open_dataset(quarantine), view)
        except InputDataError as exc:
            log.warning("report: the quarantined rows %s cannot be read (%s)", quarantine, exc)
    return section


def _quarantine_examples(quarantine: InputDataset, view: RunView) -> dict[str, Any] | None:
    """Up to ``QUARANTINE_EXAMPLES`` rows per reason (from the first rows quarantined): ids,
    input row number, reasons and the values of the columns the reasons name."""
    from ig_airflow.validation.stage import REASON_COLUMN, ROW_NUMBER_COLUMN

    batch = next(iter(quarantine.iter_batches(QUARANTINE_SCAN_ROWS)), None)
    if batch is None or not batch.num_rows:
        return None
    frame = batch.to_pandas()
    seen: dict[str, int] = {}
    rows = []
    for record in frame.to_dict(orient="records"):
        reasons = str(record.get(REASON_COLUMN, "")).split("; ")
        if all(seen.get(r, 0) >= QUARANTINE_EXAMPLES for r in reasons):
            continue
        for reason in reasons:
            seen[reason] = seen.get(reason, 0) + 1
        named = [c for c in _named_columns(reasons) if c in record and c not in view.id_columns]
        values = ", ".join(f"{c} = {view.labels.show(c, record[c])}" for c in named)
        ids = ", ".join(f"{c}={_plain(record.get(c))}" for c in view.id_columns if c in record)
        rows.append([ids, _cell(record.get(ROW_NUMBER_COLUMN)), "; ".join(reasons), values])
    return {"columns": ["ids", "input row", "reasons", "values that failed"], "rows": rows}


def _named_columns(reasons: list[str]) -> list[str]:
    """The columns named in reasons such as ``expect_column_values_to_be_in_set(workclass)``."""
    named: list[str] = []
    for reason in reasons:
        for inside in re.findall(r"\(([^()]*)\)\s*$", reason):
            named += [c for c in inside.split(",") if c and c not in named]
    return named


def _completeness_section(view: RunView) -> dict[str, Any]:
    """Share of rows converged (completeness error within the run's tolerance), the run's
    error numbers, and the rows with the largest completeness error."""
    attributions = open_dataset(view.layout.attributions)
    converged = read_column(attributions, "converged")
    errors = read_column(attributions, "completeness_error")
    share = float(converged.mean()) if len(converged) else 1.0
    completeness = view.manifest.get("completeness") or {}
    ig = view.manifest.get("ig") or {}
    numbers = {
        "rows": len(converged),
        "converged": int(converged.sum()),
        "not converged": int(len(converged) - converged.sum()),
        "tolerance": ig.get("tolerance"),
        "max steps": ig.get("max_steps"),
        "mean error": completeness.get("mean_error", float(np.nanmean(errors)) if len(errors) else None),
        "max error": completeness.get("max_error", float(np.nanmax(errors)) if len(errors) else None),
    }
    numbers = {k: v for k, v in numbers.items() if v is not None}
    worst = np.argsort(-np.nan_to_num(errors, nan=np.inf), kind="stable")[:WORST_ROWS]
    names = attributions.schema.names
    columns = [c for c in [*view.id_columns, TARGET_COLUMN] if c in names] + WORST_COLUMNS
    rows = attributions.take(np.sort(worst), columns).to_pandas()
    rows = rows.sort_values("completeness_error", ascending=False, kind="stable")
    return {
        "share": _percent(share),
        "all": bool(share == 1.0),
        "numbers": [[k, _cell(v)] for k, v in numbers.items()],
        "worst": _table(rows),
    }


def _waterfalls(rows: pd.DataFrame, view: RunView) -> list[dict[str, Any]]:
    """One waterfall per row, captioned with its ids, each step labelled with the row's value,
    and a table of the row's values, baselines and attributions."""
    inputs = view.explained_rows()
    baseline = view.manifest.get("baseline") or {}
    shown = []
    for i, (_, row) in enumerate(rows.iterrows()):
        label = ", ".join(f"{c}={_plain(row[c])}" for c in view.id_columns if c in row) or f"row {i}"
        values = _row_values(inputs, row, view)
        name = f"waterfall_{i}.png"
        data = plot_waterfall(row, view.features, view.report.image(name), label, values=values)
        names, steps, _ = waterfall_steps(row, view.features)
        table = [
            [
                str(f),
                values.get(f, "-"),
                view.labels.show(f, baseline.get(f)) if f in baseline else "-",
                _cell(step),
            ]
            for f, step in zip(names, steps, strict=False)
        ]
        shown.append(
            {
                "label": label,
                "prediction": _cell(row["prediction"]),
                "baseline": _cell(row["baseline_prediction"]),
                "figure": _figure(f"Waterfall for {label}", name, data),
                "table": {"columns": ["feature", "value", "baseline", "attribution"], "rows": table},
            }
        )
    return shown


def _row_values(inputs: InputDataset | None, row: pd.Series, view: RunView) -> dict[str, str]:
    """The row's feature values as shown (categories by label), found by its ids in the
    explained rows; {} when they cannot be found."""
    ids = {c: row[c] for c in view.id_columns if c in row}
    if inputs is None or not ids:
        return {}
    features = [f for f in view.features if f in inputs.schema.names]
    found = inputs.find({c: _plain(v) for c, v in ids.items()}, features).to_pylist()
    if len(found) != 1:
        return {}
    return {f: view.labels.show(f, found[0][f]) for f in features}


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
        data = plot_importance(shown, report.image(name), title=title)
        silent = int((group["mean_abs_attribution"] == 0).sum())
        figure = _figure(f"Layer {layer}", name, data)
        sections.append({"name": str(layer), "units": len(group), "silent": silent, "figure": figure})
    return sections


def _glance(context: dict[str, Any]) -> list[dict[str, str]]:
    """The first lines of the page: each a label, a text and a state (``good``, ``bad`` or
    ``neutral``); a run without a drift reference is neutral, never an all-clear."""
    lines = [{"label": "Rows explained", "text": _cell(context["run"]["explained"]), "state": "neutral"}]
    quarantine = context["quarantine"]
    if quarantine["ran"]:
        text = f"{quarantine['quarantined']} of {quarantine['input']} input rows"
        lines.append(
            {"label": "Quarantined", "text": text, "state": "bad" if quarantine["quarantined"] else "good"}
        )
    completeness = context["completeness"]
    lines.append(
        {
            "label": "Converged",
            "text": completeness["share"],
            "state": "good" if completeness["all"] else "bad",
        }
    )
    drift = context["drift"]
    drift_text = {
        "not_run": ("drift not computed for this run", "neutral"),
        "no_reference": ("no reference yet: nothing to compare with", "neutral"),
        "alerts": (f"{len(drift['alerts'])} alert(s)", "bad"),
        "clear": ("no drift alert against the reference", "good"),
    }[drift["state"]]
    lines.append({"label": "Drift", "text": drift_text[0], "state": drift_text[1]})
    if context["quality"]:
        passed = context["quality"]["passed"]
        lines.append(
            {
                "label": "Quality",
                "text": "passed" if passed else "FAILED",
                "state": "good" if passed else "bad",
            }
        )
    return lines


def _figure(caption: str, name: str, png: bytes) -> dict[str, str]:
    """A figure of the page: the PNG embedded as a data URI (the page needs no other file),
    and the name of its copy beside the page."""
    return {
        "caption": caption,
        "src": "data:image/png;base64," + base64.b64encode(png).decode("ascii"),
        "file": name,
    }


def _plain(value: Any) -> Any:
    """A numpy or pandas scalar as the Python value (for filters and captions)."""
    return value.item() if hasattr(value, "item") and not isinstance(value, str | bytes) else value


def _number(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        value = float(value)
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.4g}"
    return str(value)


def _p(value: Any) -> str:
    """A p-value with two significant digits (1.5e-41, 0.032)."""
    return f"{float(value):.2g}" if isinstance(value, numbers.Real) else _cell(value)


def _short(text: str, limit: int = 24) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "~"


def _percent(value: Any) -> str:
    return f"{float(value):.1%}" if isinstance(value, numbers.Real) and np.isfinite(value) else _cell(value)


def _cell(value: Any) -> str:
    """A number, string or list as table text: floats with 4 decimals, integers and the rest as
    is, lists (an interval) as ``[a, b]``."""
    if value is None:
        return "-"
    if isinstance(value, list | tuple | np.ndarray):
        return "[" + ", ".join(_cell(v) for v in value) + "]"
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
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
