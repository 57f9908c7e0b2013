"""Global attribution drift between two runs (two model versions on the same data, or one
model on two periods), with thresholds, alerts and a history table.

Metrics:

- NDCG@k of the current ranking by mean |attribution|, with the reference run's mean
  |attribution| as relevance (SageMaker Model Monitor's feature-attribution drift):
  ``DCG@k = sum_{i<=k} a_ref(f_i) / log2(i + 1)`` over the current top k, divided by the same
  sum over the reference's own top k. Alert below ``ndcg_min`` (0.90).
- Spearman rank correlation of the two rankings.
- Per feature, on the attribution distributions over ``bins`` shared equal-width bins (both
  runs' histograms streamed one column chunk at a time): the Jensen-Shannon distance (base 2,
  in [0, 1]), the population stability index (PSI), the 1-D Wasserstein distance of the
  binned distributions, and the change in share of total importance.
- The features that entered or left the top k.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ig_airflow.analysis.aggregation import (
    attribution_features,
    column_histogram,
    feature_summary,
    open_attributions,
    primary_rows,
)
from ig_airflow.config import DriftSection
from ig_airflow.exceptions import ConfigError, DriftAlert
from ig_airflow.io import exclusive, exists, read_parquet, write_json, write_parquet
from ig_airflow.layout import DriftLayout
from ig_airflow.results import attribution_column

log = logging.getLogger(__name__)
EPS = 1e-6


def ndcg_at_k(reference: dict[str, float], current: dict[str, float], k: int) -> float:
    """NDCG@k of ``current``'s ranking with ``reference`` importances as relevance."""
    ranked = sorted(current, key=lambda f: (-current[f], f))[:k]
    ideal = sorted(reference, key=lambda f: (-reference[f], f))[:k]
    dcg = sum(reference.get(f, 0.0) / np.log2(i + 2) for i, f in enumerate(ranked))
    idcg = sum(reference[f] / np.log2(i + 2) for i, f in enumerate(ideal))
    return float(dcg / idcg) if idcg > 0 else 1.0


def spearman(reference: dict[str, float], current: dict[str, float]) -> float:
    """Spearman rank correlation over the shared features (average ranks for ties)."""
    features = sorted(set(reference) & set(current))
    if len(features) < 2:
        return 1.0
    a = pd.Series([reference[f] for f in features]).rank().to_numpy()
    b = pd.Series([current[f] for f in features]).rank().to_numpy()
    if a.std() == 0 or b.std() == 0:
        return 1.0 if (a == b).all() else 0.0
    return float(np.corrcoef(a, b)[0, 1])


def shared_edges(reference: Any, current: Any, bins: int) -> np.ndarray:
    """Equal-width bin edges over the union of two columns' ranges (from their summaries)."""
    lo, hi = float(min(reference["min"], current["min"])), float(max(reference["max"], current["max"]))
    if not hi > lo:
        hi = lo + 1.0
    return np.linspace(lo, hi, bins + 1)


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance (square root of the divergence, base 2): 0 same, 1 disjoint."""
    m = (p + q) / 2

    def kl(x: np.ndarray, y: np.ndarray) -> float:
        mask = x > 0
        return float(np.sum(x[mask] * np.log2(x[mask] / y[mask])))

    return float(np.sqrt(max(0.5 * kl(p, m) + 0.5 * kl(q, m), 0.0)))


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index, sum((a - e) * ln(a / e)), empty bins floored at 1e-6."""
    e = np.maximum(expected, EPS)
    a = np.maximum(actual, EPS)
    return float(np.sum((a - e) * np.log(a / e)))


def binned_wasserstein(p: np.ndarray, q: np.ndarray, edges: np.ndarray) -> float:
    """1-D Wasserstein distance between two distributions on the same bins:
    ``sum |CDF_p - CDF_q| * bin width``."""
    return float(np.sum(np.abs(np.cumsum(p) - np.cumsum(q))[:-1] * np.diff(edges)[:-1]))


@dataclass
class DriftReport:
    ndcg: float
    spearman: float
    features: pd.DataFrame
    entered_top_k: list[str]
    left_top_k: list[str]
    alerts: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ndcg_at_k": self.ndcg,
            "spearman": self.spearman,
            "entered_top_k": self.entered_top_k,
            "left_top_k": self.left_top_k,
            "alerts": self.alerts,
            "features": self.features.to_dict(orient="records"),
        }


def compare_runs(reference_uri: str, current_uri: str, settings: DriftSection) -> DriftReport:
    """Drift of ``current_uri``'s attributions against ``reference_uri``'s (in a multi-target
    run, of each row's first target: the first listed or the predicted class)."""
    reference, current = open_attributions(reference_uri), open_attributions(current_uri)
    ref_rows, cur_rows = primary_rows(reference), primary_rows(current)
    ref_summary = feature_summary(reference, ref_rows).set_index("feature")
    cur_summary = feature_summary(current, cur_rows).set_index("feature")
    ref_imp = ref_summary["mean_abs_attribution"].to_dict()
    cur_imp = cur_summary["mean_abs_attribution"].to_dict()
    k = min(settings.top_k, len(cur_imp))
    ndcg = ndcg_at_k(ref_imp, cur_imp, k)
    rho = spearman(ref_imp, cur_imp)
    ref_top = list(ref_summary.sort_values("rank").index[:k])
    cur_top = list(cur_summary.sort_values("rank").index[:k])
    rows = []
    shared = [f for f in attribution_features(current) if f in ref_imp]
    for feature in shared:
        column = attribution_column(feature)
        edges = shared_edges(ref_summary.loc[feature], cur_summary.loc[feature], settings.bins)
        p = column_histogram(reference, column, edges, ref_rows).astype(np.float64)
        q = column_histogram(current, column, edges, cur_rows).astype(np.float64)
        p, q = p / max(p.sum(), 1.0), q / max(q.sum(), 1.0)
        rows.append(
            {
                "feature": feature,
                "reference_mean_abs": ref_imp[feature],
                "current_mean_abs": cur_imp[feature],
                "reference_share": float(ref_summary.at[feature, "share"]),
                "current_share": float(cur_summary.at[feature, "share"]),
                "share_change": float(cur_summary.at[feature, "share"] - ref_summary.at[feature, "share"]),
                "reference_rank": int(ref_summary.at[feature, "rank"]),
                "current_rank": int(cur_summary.at[feature, "rank"]),
                "js_distance": jensen_shannon(p, q),
                "psi": psi(p, q),
                "wasserstein": binned_wasserstein(p, q, edges),
            }
        )
    features = pd.DataFrame(rows).sort_values("current_rank").reset_index(drop=True)
    report = DriftReport(
        ndcg,
        rho,
        features,
        [f for f in cur_top if f not in ref_top],
        [f for f in ref_top if f not in cur_top],
    )
    report.alerts = alerts_for(report, settings)
    return report


def alerts_for(report: DriftReport, settings: DriftSection) -> list[dict[str, Any]]:
    alerts: list[dict[str, Any]] = []
    if report.ndcg < settings.ndcg_min:
        alerts.append(
            {
                "metric": "ndcg_at_k",
                "value": report.ndcg,
                "threshold": settings.ndcg_min,
                "features": report.entered_top_k or report.features.head(settings.top_k)["feature"].tolist(),
            }
        )
    if settings.spearman_min is not None and report.spearman < settings.spearman_min:
        alerts.append(
            {
                "metric": "spearman",
                "value": report.spearman,
                "threshold": settings.spearman_min,
                "features": [],
            }
        )
    for row in report.features.itertuples():
        for metric, value, limit in (
            ("js_distance", row.js_distance, settings.js_max),
            ("psi", row.psi, settings.psi_max),
            ("share_change", abs(row.share_change), settings.share_change_max),
        ):
            if value > limit:
                alerts.append(
                    {"metric": metric, "value": float(value), "threshold": limit, "features": [row.feature]}
                )
    return alerts


RUN_COLUMNS = ["run_key", "model_version", "run_id"]  # one run in the history table
HISTORY_REFERENCES = ("previous", "previous_run", "previous_model_version", "auto")


def as_run(run: str | dict[str, str]) -> dict[str, str]:
    """A run of the history table: its partition key, model version and run id (a bare key:
    a run with no identity, as tables written before runs had one)."""
    if isinstance(run, str):
        return {"run_key": run, "model_version": "", "run_id": ""}
    return {column: str(run.get(column, "")) for column in RUN_COLUMNS}


def read_history(history_uri: str) -> pd.DataFrame:
    """The history table, with empty identity columns in tables written before runs had one."""
    history = read_parquet(history_uri).to_pandas()
    for column in [*RUN_COLUMNS, "recorded_at"]:
        if column not in history:
            history[column] = ""
    return history


def rows_of(history: pd.DataFrame, run: dict[str, str]) -> pd.Series:
    """Which rows of the history table are the run's."""
    return (history[RUN_COLUMNS] == pd.Series(run)[RUN_COLUMNS]).all(axis=1)


def append_history(
    history_uri: str, run: str | dict[str, str], summary: pd.DataFrame, extra: dict[str, Any]
) -> int:
    """Write this run's rows into the history table, replacing only its own earlier rows (a
    re-run of the same run: same partition key, model version and run id) and keeping when it
    was first recorded, so re-running is byte-identical; every other run's rows stay. Returns
    the table's row count. Concurrent appends are serialised by a lock, so none is lost."""
    run = as_run(run)
    rows = summary[["feature", "mean_abs_attribution", "mean_attribution", "share", "rank"]].copy()
    for i, column in enumerate(RUN_COLUMNS):
        rows.insert(i, column, run[column])
    for key, value in extra.items():
        rows[key] = value
    with exclusive(history_uri):
        recorded_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        if exists(history_uri):
            history = read_history(history_uri)
            mine = rows_of(history, run)
            if mine.any():
                recorded_at = str(history.loc[mine, "recorded_at"].iloc[0])
            rows["recorded_at"] = recorded_at
            rows = pd.concat([history[~mine], rows], ignore_index=True)
        else:
            rows["recorded_at"] = recorded_at
        rows = rows.sort_values(["run_key", "recorded_at", "model_version", "run_id", "rank"])
        write_parquet(history_uri, pa.Table.from_pandas(rows.reset_index(drop=True), preserve_index=False))
    return len(rows)


def reference_run(history_uri: str | None, how: str, run: str | dict[str, str]) -> str | None:
    """Attributions URI of the reference run chosen from the history table:

    - ``previous_run`` (``previous``): the latest run of an earlier partition key, any model;
    - ``previous_model_version``: the latest run of another model version on this partition key;
    - ``auto``: that, else the latest run of this model version on an earlier partition key.
    """
    run = as_run(run)
    if not history_uri:
        raise ConfigError(f"drift.reference_uri: {how!r} needs drift.history_uri")
    if not exists(history_uri):
        return None
    runs = read_history(history_uri).drop_duplicates(RUN_COLUMNS).sort_values(["run_key", "recorded_at"])
    runs = runs[~rows_of(runs, run)]  # never itself
    earlier = runs[runs["run_key"] < run["run_key"]]
    other_version = runs[
        (runs["run_key"] == run["run_key"]) & (runs["model_version"] != run["model_version"])
    ]
    same_version_earlier = earlier[earlier["model_version"] == run["model_version"]]
    if how in ("previous", "previous_run"):
        chosen = earlier
    elif how == "previous_model_version":
        chosen = other_version
    else:
        chosen = other_version if len(other_version) else same_version_earlier
    return str(chosen["attributions_uri"].iloc[-1]) if len(chosen) else None


def wait_for_partition(
    history_uri: str | None, partition: str, model_version: str | None, timeout_s: float, poll_s: float = 2.0
) -> dict[str, Any]:
    """Wait until the history table holds a run of ``partition`` (of ``model_version`` when
    given), at most ``timeout_s``; returns what was waited for, how long, and whether it came."""
    started = time.monotonic()
    while not (found := _recorded(history_uri, partition, model_version)):
        waited = time.monotonic() - started
        if waited >= timeout_s:
            log.warning(
                "no run of partition %s recorded after %.0f s; the history as it is", partition, waited
            )
            break
        if waited == 0 or int(waited) % 60 < poll_s:
            log.info("waiting for the run of partition %s to be recorded (%.0f s)", partition, waited)
        time.sleep(poll_s)
    return {"partition": partition, "seconds": round(time.monotonic() - started, 1), "found": found}


def _recorded(history_uri: str | None, partition: str, model_version: str | None) -> bool:
    if not history_uri or not exists(history_uri):
        return False
    history = read_history(history_uri)
    if "partition" not in history:
        return False
    mine = history["partition"] == partition
    if model_version:
        mine &= history["model_version"] == model_version
    return bool(mine.any())


def summarise_drift(
    current_uri: str,
    output_uri: str,
    settings: DriftSection,
    run: str | dict[str, str],
    previous_partition: str | None = None,
) -> dict[str, Any]:
    """Write ``drift.json`` (and ``drift_features.parquet``) under ``output_uri`` comparing
    ``current_uri`` with ``settings.reference_uri``; append the run to the history table.
    ``previous_partition``: the input's partition before this run's, whose run a history
    reference waits for (``drift.wait_for_reference_s``). Alerts are logged; with
    ``on_alert: fail`` they raise :class:`DriftAlert` after the outputs are written."""
    partition = run.get("partition", "") if isinstance(run, dict) else ""
    run = as_run(run)
    reference = settings.reference_uri
    how = reference if reference in HISTORY_REFERENCES else None
    result: dict[str, Any] = {**run, "current": current_uri, "reference_choice": how}
    if how:
        if previous_partition and how != "previous_model_version" and settings.wait_for_reference_s:
            version = run["model_version"] if how == "auto" else None
            result["waited_for"] = wait_for_partition(
                settings.history_uri, previous_partition, version, settings.wait_for_reference_s
            )
        reference = reference_run(settings.history_uri, how, run)
    result["reference"] = reference
    current = open_attributions(current_uri)
    summary = feature_summary(current, primary_rows(current))
    if settings.history_uri:
        extra = {"attributions_uri": current_uri, "partition": partition}
        result["history_rows"] = append_history(settings.history_uri, run, summary, extra)
        result["history"] = settings.history_uri
    if reference:
        report = compare_runs(reference, current_uri, settings)
        write_parquet(
            DriftLayout(output_uri).features,
            pa.Table.from_pandas(report.features, preserve_index=False),
        )
        result.update(report.to_dict())
    else:
        result.update({"alerts": [], "note": "no reference run (none configured, or no earlier run)"})
    write_json(DriftLayout(output_uri).json, result)
    for alert in result["alerts"]:
        log.warning(
            "DRIFT ALERT %s=%.4f (threshold %s) features=%s",
            alert["metric"],
            alert["value"],
            alert["threshold"],
            alert["features"],
        )
    if not result["alerts"]:
        log.info("no attribution drift alert (NDCG@%d=%s)", settings.top_k, result.get("ndcg_at_k"))
    if result["alerts"] and settings.on_alert == "fail":
        raise DriftAlert(
            f"{len(result['alerts'])} drift alert(s): "
            + "; ".join(f"{a['metric']} {a['features']}" for a in result["alerts"])
        )
    return result
