"""What drives errors: summaries of the loss attributions of a run (``ig.loss``).

- ``summary/loss_summary.parquet`` (:func:`summarise_loss`): per feature, the rows explained,
  ``mean_loss_attribution`` (positive: the feature's values raise the loss on average, it
  drives errors; negative: it lowers the loss, it is what the model gets right),
  ``mean_abs_loss_attribution``, ``share`` of the total mean |loss attribution| and ``rank``
  by mean loss attribution (1 = raises the loss the most); ``summary.json`` gains ``loss``:
  the rows whose loss was explained, mean loss, mean baseline loss, share converged and the top
  features.
- The history table gains the two means per feature (:func:`with_loss_importance`), so the
  report follows them over time; the drift stage records their change against the reference
  (:func:`loss_importance_change`, ``loss_importance`` in ``drift.json``).

Multi-target runs repeat each row's loss on its target rows: only the first target's rows
(``target_rank == 1``) are read. Rows with null loss columns (unlabelled, or left out by
``ig.loss_sample``) are left out.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ig_airflow.analysis.aggregation import Source, iter_column_chunks, open_attributions, primary_rows
from ig_airflow.dataset import as_dataset
from ig_airflow.io import ROW_GROUP_ROWS, exists, read_json, write_json, write_parquet
from ig_airflow.layout import SummaryLayout
from ig_airflow.results import LOSS_COLUMNS, loss_attribution_column, loss_features

log = logging.getLogger(__name__)
SUMMARY_COLUMNS = [
    "feature",
    "rows",
    "mean_loss_attribution",
    "mean_abs_loss_attribution",
    "share",
    "rank",
]
HISTORY_COLUMNS = ["mean_loss_attribution", "mean_abs_loss_attribution"]  # per feature and run
TOP = 5


def _means(source: Source, column: str) -> tuple[int, float, float]:
    """Labelled rows, mean and mean |value| of a loss column (NaN and null rows left out)."""
    count, total, abs_total = 0, 0.0, 0.0
    for chunk in iter_column_chunks(source, column, primary_rows(source)):
        chunk = chunk[np.isfinite(chunk)]
        count += len(chunk)
        total += float(chunk.sum())
        abs_total += float(np.abs(chunk).sum())
    return count, total / count if count else float("nan"), abs_total / count if count else float("nan")


def _share_true(source: Source, column: str) -> float:
    """The share of true values of a boolean loss column among its labelled (non-null) rows."""
    dataset, where = as_dataset(source), primary_rows(source)
    true = total = 0
    for table in dataset.iter_batches(ROW_GROUP_ROWS, [column, *([where[0]] if where else [])]):
        values = table.column(0)
        if where is not None:
            values = values.filter(pc.equal(table.column(1), where[1]))
        true += int(pc.sum(values).as_py() or 0)
        total += len(values) - values.null_count
    return true / total if total else float("nan")


def loss_summary(source: Source) -> pd.DataFrame:
    """Per feature, the loss importance of a run (see the module docstring); empty when the run
    has no loss attributions."""
    dataset = as_dataset(source)
    rows = []
    for feature in loss_features(dataset.schema.names):
        count, mean, mean_abs = _means(dataset, loss_attribution_column(feature))
        rows.append((feature, count, mean, mean_abs))
    frame = pd.DataFrame(rows, columns=SUMMARY_COLUMNS[:4])
    total = frame["mean_abs_loss_attribution"].sum()
    frame["share"] = frame["mean_abs_loss_attribution"] / total if total > 0 else 0.0
    frame["rank"] = frame["mean_loss_attribution"].rank(ascending=False, method="first").fillna(0).astype(int)
    return frame.sort_values("rank").reset_index(drop=True)[SUMMARY_COLUMNS]


def loss_totals(source: Source, summary: pd.DataFrame) -> dict[str, Any]:
    """The rows whose loss was explained (labelled, sampled), their mean loss, mean baseline
    loss, share converged and the top features."""
    dataset = as_dataset(source)
    loss, at_baseline, _, _, converged = LOSS_COLUMNS
    rows, mean_loss, _ = _means(dataset, loss)
    _, mean_baseline, _ = _means(dataset, at_baseline)
    share_converged = _share_true(dataset, converged)
    return {
        "rows": rows,
        "mean_loss": mean_loss,
        "mean_loss_at_baseline": mean_baseline,
        "share_converged": share_converged,
        "top_features": summary.head(TOP)["feature"].tolist(),
    }


def summarise_loss(attributions_uri: str, output_uri: str) -> dict[str, Any] | None:
    """Write ``loss_summary.parquet`` under ``output_uri`` and add ``loss`` (totals, top
    features) and the table to ``summary.json``; returns the totals, or None (and writes
    nothing) when the run has no loss attributions."""
    attributions = as_dataset(attributions_uri)
    summary = loss_summary(attributions)
    if summary.empty:
        return None
    layout = SummaryLayout(output_uri)
    write_parquet(layout.table("loss"), pa.Table.from_pandas(summary, preserve_index=False))
    totals = loss_totals(attributions, summary)
    result = read_json(layout.json) if exists(layout.json) else {"outputs": {}}
    result["loss"] = totals
    result.setdefault("outputs", {})["loss_summary"] = layout.table("loss")
    write_json(layout.json, result)
    log.info("loss: mean %.4f on %d rows", totals["mean_loss"], totals["rows"])
    return totals


def with_loss_importance(summary: pd.DataFrame, source: Source) -> pd.DataFrame:
    """A feature summary with the run's loss importance per feature (``HISTORY_COLUMNS``), for
    the history table; unchanged when the run has no loss attributions."""
    loss = loss_summary(source)
    if loss.empty:
        return summary
    return summary.merge(loss[["feature", *HISTORY_COLUMNS]], on="feature", how="left")


def loss_importance_change(reference_uri: str, current: Source) -> dict[str, Any] | None:
    """The change in each feature's mean loss attribution from the reference run to this one
    (largest change first), and in the mean loss; None unless both runs explain the loss."""
    now = loss_summary(current)
    before = loss_summary(open_attributions(reference_uri))
    if now.empty or before.empty:
        return None
    both = before.merge(now, on="feature", suffixes=("_reference", "_current"))
    both["change"] = both["mean_loss_attribution_current"] - both["mean_loss_attribution_reference"]
    both = both.reindex(both["change"].abs().sort_values(ascending=False).index)
    features = [
        {
            "feature": str(row.feature),
            "reference": float(row.mean_loss_attribution_reference),
            "current": float(row.mean_loss_attribution_current),
            "change": float(row.change),
            "reference_rank": int(row.rank_reference),
            "current_rank": int(row.rank_current),
        }
        for row in both.itertuples(index=False)
    ]
    mean_loss = [_means(source, LOSS_COLUMNS[0])[1] for source in (open_attributions(reference_uri), current)]
    return {"mean_loss": {"reference": mean_loss[0], "current": mean_loss[1]}, "features": features}


def loss_history(history: pd.DataFrame, runs: pd.DataFrame, top: int = 6) -> pd.DataFrame | None:
    """Mean loss attribution per run (rows: ``runs``' positions) of the ``top`` features by
    their mean over the runs, from the history table; None unless two runs recorded it."""
    if HISTORY_COLUMNS[0] not in history:
        return None
    recorded = history.dropna(subset=[HISTORY_COLUMNS[0]])
    keys = list(runs.columns.drop("label"))
    data = recorded.merge(runs.reset_index(names="_x"), on=keys)
    if data["_x"].nunique() < 2:
        return None
    table = data.pivot_table(index="_x", columns="feature", values=HISTORY_COLUMNS[0], aggfunc="mean")
    keep = table.mean().sort_values(ascending=False).index[:top]
    return table[keep]


def draw_loss_importance(ax: Any, summary: pd.DataFrame, top: int = 12) -> None:
    """Horizontal bars of the ``top`` features by mean loss attribution (red: raises the loss)."""
    data = summary.nsmallest(top, "rank").iloc[::-1]
    y = np.arange(len(data))
    values = data["mean_loss_attribution"].to_numpy(np.float64)
    ax.barh(y, values, color=np.where(values > 0, "#c44e52", "#4c72b0"))
    ax.set_yticks(y, [str(f) for f in data["feature"]])
    ax.axvline(0, color="black", linewidth=0.6)
    ax.set_xlabel("mean loss attribution (> 0: raises the loss)")
    ax.set_title("What drives errors")


def draw_loss_over_time(ax: Any, table: pd.DataFrame, labels: list[str]) -> None:
    """One line per feature: its mean loss attribution in each run of the history."""
    for feature in table.columns:
        ax.plot(table.index, table[feature], marker="o", label=str(feature))
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel("mean loss attribution")
    ax.set_title("What drives errors over time")
    ax.tick_params(axis="x", rotation=30)
    ax.legend(fontsize=8, ncol=2)
