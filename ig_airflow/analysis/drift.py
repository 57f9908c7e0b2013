"""Global attribution drift between two runs (two model versions on the same data, or one
model on two periods), with statistics behind every alert, drift impact, cohorts and a history
table.

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
- ``importance_moved``: the feature's Wasserstein distance over the reference's total mean
  |attribution|, the share of the model's importance its attributions moved. It is the effect
  size of the distribution alerts: a shape change in the attributions of a feature the model
  barely uses moves nothing.
- Drift impact (with both runs' explained inputs): the Jensen-Shannon distance of the feature's
  input values (``input_js_distance``) times its share of importance, the larger of the two
  runs' (Fiddler's attribution x drift): an input shift the model ignores has none.
- The features that entered or left the top k; per cohort segment, NDCG@k and share changes.

Statistics (:mod:`.statistics`): each run's rows are cut into at most 2,048 blocks whose sums
and histograms are kept in the streamed passes; every metric is recomputed on 200 Poisson
bootstrap resamples of each run (the 95% intervals, ``ci95``) and on 200 pairs drawn from the
two runs' pooled blocks (the null: what resampling the same population produces;
``*_null`` is its median). An alert needs the metric past its threshold, a p-value against the
null that stays at most ``alpha`` after Holm's adjustment over every test of the run, and an
effect of at least ``min_effect``; alerts are listed by effect, largest first, after the
global ones.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ig_airflow.analysis import statistics as st
from ig_airflow.analysis.aggregation import (
    ColumnStats,
    Where,
    attribution_features,
    column_block_histogram,
    feature_summary,
    open_attributions,
    primary_rows,
)
from ig_airflow.analysis.cohorts import (
    Segments,
    SegmentSums,
    check_aligned,
    explained_inputs,
    input_block_histograms,
    read_input_column,
    scan_attributions,
)
from ig_airflow.analysis.decomposition import CrossTermsFn, decompose_change
from ig_airflow.analysis.loss import HISTORY_COLUMNS as LOSS_HISTORY_COLUMNS
from ig_airflow.analysis.loss import loss_importance_change, with_loss_importance
from ig_airflow.config import AlertRule, CohortSection, DriftSection
from ig_airflow.dataset import InputDataset
from ig_airflow.exceptions import ConfigError, DriftAlert, InputDataError
from ig_airflow.io import exclusive, exists, read_parquet, write_json, write_parquet
from ig_airflow.layout import DriftLayout
from ig_airflow.results import attribution_column

log = logging.getLogger(__name__)
GLOBAL_METRICS = ("ndcg_at_k", "spearman")


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
    return float(st.js_distance(np.asarray(p, np.float64), np.asarray(q, np.float64)))


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index, sum((a - e) * ln(a / e)), empty bins floored at 1e-6."""
    return float(st.psi(np.asarray(expected, np.float64), np.asarray(actual, np.float64)))


def binned_wasserstein(p: np.ndarray, q: np.ndarray, edges: np.ndarray) -> float:
    """1-D Wasserstein distance between two distributions on the same bins:
    ``sum |CDF_p - CDF_q| * bin width``."""
    return float(st.wasserstein(np.asarray(p, np.float64), np.asarray(q, np.float64), edges))


@dataclass
class RunScan:
    """One run's streamed passes: per feature the exact statistics with per-block |attribution|
    sums, per cohort the per-block, per-segment sums, then per-block histograms on shared bins."""

    uri: str
    dataset: InputDataset
    where: Where
    block: int
    stats: list[ColumnStats]
    cohorts: list[SegmentSums]
    histograms: np.ndarray | None = None  # blocks x (features * bins)

    @property
    def rows(self) -> int:
        return self.stats[0].count if self.stats else 0

    @property
    def blocks(self) -> int:
        return max((s.blocks for s in self.stats), default=0)

    def block_abs(self) -> np.ndarray:
        return np.stack([s.block_abs[: self.blocks] for s in self.stats], axis=1)

    def block_counts(self) -> np.ndarray:
        return self.stats[0].block_counts()


def scan_run(uri: str, dataset: InputDataset, features: list[str], segments: Sequence[Segments]) -> RunScan:
    where = primary_rows(dataset)
    block = st.block_rows(len(segments[0].codes) if segments else dataset.num_rows)
    stats, cohorts = scan_attributions(dataset, features, where, block, segments)
    return RunScan(uri, dataset, where, block, stats, cohorts)


def add_histograms(scan: RunScan, features: list[str], edges: np.ndarray) -> None:
    """The second pass: each feature's attributions per block on its shared ``edges``."""
    parts = [
        column_block_histogram(scan.dataset, attribution_column(f), e, scan.block, scan.blocks, scan.where)
        for f, e in zip(features, edges, strict=True)
    ]
    scan.histograms = np.concatenate(parts, axis=1) if parts else np.zeros((scan.blocks, 0))


@dataclass
class Comparison:
    """Two scanned runs and the resampling weights of their comparison."""

    reference: RunScan
    current: RunScan
    weights: st.Resampling
    features: list[str]

    @classmethod
    def of(
        cls, reference: RunScan, current: RunScan, features: list[str], settings: DriftSection
    ) -> Comparison:
        share = reference.rows / max(reference.rows + current.rows, 1)
        weights = st.Resampling.draw(
            settings.resamples, settings.seed, reference.blocks, current.blocks, share
        )
        return cls(reference, current, weights, features)

    def means(self, sums: Callable[[RunScan], np.ndarray], counts: Callable[[RunScan], np.ndarray]) -> tuple:
        """Per-run (value, boot, null) replicates of ``sums / counts``, from per-block arrays."""
        ref, cur, w = self.reference, self.current, self.weights
        pooled_sums = np.concatenate([sums(ref), sums(cur)])
        pooled_counts = np.concatenate([counts(ref), counts(cur)])
        return tuple(
            st.Replicates(
                _ratio(sums(run).sum(axis=0), counts(run).sum(axis=0)),
                st.resampled_means(boot, sums(run), counts(run)),
                st.resampled_means(null, pooled_sums, pooled_counts),
            )
            for run, boot, null in ((ref, w.reference, w.null_reference), (cur, w.current, w.null_current))
        )

    def histograms(self, bins: int) -> tuple[st.Replicates, st.Replicates]:
        """Per-run replicates of each feature's attribution histogram (``... x features x bins``)."""
        features = len(self.features)

        def shaped(counts: np.ndarray) -> np.ndarray:
            return st.normalised(counts.reshape(*counts.shape[:-1], features, bins))

        return self.block_replicates(self.reference.histograms, self.current.histograms, shaped)

    def block_replicates(
        self, reference: np.ndarray, current: np.ndarray, shaped: Callable[[np.ndarray], np.ndarray]
    ) -> tuple[st.Replicates, st.Replicates]:
        """Per-run (value, boot, null) replicates of ``shaped`` block sums (blocks on axis 0)."""
        w, pooled = self.weights, np.concatenate([reference, current])
        return tuple(
            st.Replicates(shaped(blocks.sum(axis=0)), shaped(boot @ blocks), shaped(null @ pooled))
            for blocks, boot, null in (
                (reference, w.reference, w.null_reference),
                (current, w.current, w.null_current),
            )
        )


def _ratio(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.where(counts > 0, counts, 1.0), np.nan)


def _p_values(values: np.ndarray, nulls: np.ndarray, kind: str) -> np.ndarray:
    """One p-value per feature (last axis) of ``values`` against their null replicates."""
    return np.array([st.p_value(float(values[i]), nulls[:, i], kind) for i in range(len(values))])


def _tested(name: str, rep: st.Replicates, kind: str, squared: bool = False) -> dict[str, np.ndarray]:
    """A metric's value, the median of its null replicates and its p-value (a divergence that
    is a distance, such as Jensen-Shannon's, is tested squared)."""
    power = 2 if squared else 1
    return {
        name: rep.value,
        f"{name}_null": st.null_median(rep.null),
        f"{name}_p_value": _p_values(rep.value**power, rep.null**power, kind),
    }


def _interval(name: str, rep: st.Replicates, centre: np.ndarray | float = 0.0) -> dict[str, np.ndarray]:
    low, high = st.interval(rep.boot)
    return {f"{name}_ci_low": low - centre, f"{name}_ci_high": high - centre}


def importance_columns(reference: st.Replicates, current: st.Replicates) -> dict[str, np.ndarray]:
    """Per feature: each run's mean |attribution|, share and rank with their intervals, and the
    change in share with its interval and test."""
    share = st.Replicates.of(lambda a, b: st.shares(b) - st.shares(a), reference, current)
    columns: dict[str, np.ndarray] = {}
    for run, rep in (("reference", reference), ("current", current)):
        rank = st.Replicates(st.ranks(rep.value), st.ranks(rep.boot), st.ranks(rep.null))
        columns |= {f"{run}_mean_abs": rep.value, **_interval(f"{run}_mean_abs", rep)}
        columns |= {
            f"{run}_share": st.shares(rep.value),
            f"{run}_rank": rank.value,
            **_interval(f"{run}_rank", rank),
        }
    return columns | _tested("share_change", share, "two_sided") | _interval("share_change", share)


def distribution_columns(
    reference: st.Replicates, current: st.Replicates, edges: np.ndarray, reference_importance: st.Replicates
) -> dict[str, np.ndarray]:
    """Per feature: Jensen-Shannon distance, PSI and Wasserstein distance of the attribution
    histograms with their tests, and the importance the attributions moved (the effect)."""
    js = st.Replicates.of(st.js_distance, reference, current)
    index = st.Replicates.of(st.psi, reference, current)
    moved = st.Replicates.of(lambda p, q: st.wasserstein(p, q, edges), reference, current)
    total = reference_importance.map(lambda r: r.sum(axis=-1, keepdims=True))
    share = st.Replicates.of(lambda m, t: m / np.where(t > 0, t, np.nan), moved, total)
    centre = st.null_median(share.null)
    return (
        _tested("js_distance", js, "upper", squared=True)
        | _tested("psi", index, "upper")
        | _tested("wasserstein", moved, "upper")
        | {"importance_moved": share.value - centre, **_interval("importance_moved", share, centre)}
    )


def input_columns(
    comparison: Comparison,
    inputs: tuple[InputDataset, InputDataset],
    importance: tuple[st.Replicates, st.Replicates],
    bins: int,
) -> dict[str, np.ndarray]:
    """Per feature: the Jensen-Shannon distance and PSI of its input values between the runs,
    and its drift impact (that distance times its share of importance, the larger of the two
    runs'), with the impact's interval and test; NaN for a feature not in the inputs."""
    largest = st.Replicates.of(lambda a, b: np.maximum(st.shares(a), st.shares(b)), *importance)
    rows = []
    for i, feature in enumerate(comparison.features):
        if all(feature in side.schema.names for side in inputs):
            rows.append(
                _input_drift(comparison, inputs, feature, bins, largest.map(lambda s, i=i: s[..., i]))
            )
        else:
            rows.append({})
    names = ["input_js_distance", "input_js_distance_null", "input_psi", "drift_impact", "drift_impact_null"]
    names += ["drift_impact_p_value", "drift_impact_effect"]
    names += ["drift_impact_effect_ci_low", "drift_impact_effect_ci_high"]
    return {name: np.array([float(row.get(name, np.nan)) for row in rows]) for name in names}


def _input_drift(
    comparison: Comparison,
    inputs: tuple[InputDataset, InputDataset],
    feature: str,
    bins: int,
    share: st.Replicates,
) -> dict[str, float]:
    blocks = (comparison.reference.block, comparison.current.block)
    reference, current, _ = input_block_histograms(*inputs, feature, bins, blocks)
    hist = comparison.block_replicates(reference, current, st.normalised)
    js = st.Replicates.of(st.js_distance, *hist)
    impact = st.Replicates.of(np.multiply, js, share)
    centre = float(st.null_median(impact.null))
    low, high = st.interval(impact.boot)
    return {
        "input_js_distance": float(js.value),
        "input_js_distance_null": float(st.null_median(js.null)),
        "input_psi": float(st.psi(hist[0].value, hist[1].value)),
        "drift_impact": float(impact.value),
        "drift_impact_null": centre,
        "drift_impact_p_value": st.p_value(float(impact.value), impact.null, "upper"),
        "drift_impact_effect": float(impact.value) - centre,
        "drift_impact_effect_ci_low": float(low) - centre,
        "drift_impact_effect_ci_high": float(high) - centre,
    }


def global_statistics(
    reference: st.Replicates, current: st.Replicates, features: list[str], k: int
) -> dict[str, Any]:
    """NDCG@k and Spearman correlation with their intervals, null medians, p-values and effects
    (the drop below what resampling produces)."""
    ref, cur = (
        dict(zip(features, reference.value, strict=True)),
        dict(zip(features, current.value, strict=True)),
    )
    found: dict[str, Any] = {}
    for name, point, rows in (
        ("ndcg_at_k", ndcg_at_k(ref, cur, k), lambda a, b: st.ndcg_rows(a, b, k)),
        ("spearman", spearman(ref, cur), st.spearman_rows),
    ):
        rep = st.Replicates(
            np.asarray(point), rows(reference.boot, current.boot), rows(reference.null, current.null)
        )
        low, high = st.interval(rep.boot)
        centre = float(st.null_median(rep.null))
        found[name] = {
            "value": point,
            "ci95": [float(low), float(high)],
            "null_median": centre,
            "p_value": st.p_value(point, rep.null, "lower"),
            "effect": centre - point,
            "effect_ci95": [centre - float(high), centre - float(low)],
        }
    return found


def default_rules(settings: DriftSection) -> dict[str, AlertRule]:
    """The alert conditions of the ``drift`` section's thresholds, one per metric."""
    distribution = {"min_effect": settings.min_effect}
    return {
        "ndcg_at_k": AlertRule(metric="ndcg_at_k", threshold=settings.ndcg_min),
        "spearman": AlertRule(metric="spearman", threshold=settings.spearman_min),
        "share_change": AlertRule(metric="share_change", threshold=settings.share_change_max),
        "js_distance": AlertRule(metric="js_distance", threshold=settings.js_max, **distribution),
        "psi": AlertRule(metric="psi", threshold=settings.psi_max, **distribution),
        "wasserstein": AlertRule(metric="wasserstein", threshold=None),
        "drift_impact": AlertRule(
            metric="drift_impact", threshold=settings.drift_impact_max, min_effect=settings.drift_impact_max
        ),
    }


def rule_for(settings: DriftSection, metric: str, feature: str | None = None) -> AlertRule:
    """The condition of ``metric`` (for ``feature``): the last rule naming the feature, else the
    last rule for every feature, else the default."""
    chosen = default_rules(settings)[metric]
    for rule in settings.rules:
        if rule.metric == metric and not rule.features:
            chosen = rule
    for rule in settings.rules:
        if rule.metric == metric and feature is not None and feature in rule.features:
            chosen = rule
    return chosen


@dataclass
class Check:
    """One test of a metric against its condition; an alert when all three parts hold."""

    rule: AlertRule
    features: list[str]
    value: float
    effect: float
    ci95: list[float]
    p_value: float
    null_median: float
    where: dict[str, str] = field(default_factory=dict)  # a cohort's segment

    @property
    def crossed(self) -> bool:
        limit, value = self.rule.threshold, self.value
        if limit is None or not math.isfinite(value):
            return False
        if self.rule.metric in GLOBAL_METRICS:
            return value < limit
        return abs(value) > limit if self.rule.metric == "share_change" else value > limit

    def alert(self, p_adjusted: float) -> dict[str, Any]:
        return {
            "metric": self.rule.metric,
            "value": float(self.value),
            "threshold": self.rule.threshold,
            "features": self.features,
            "effect": float(self.effect),
            "ci95": [float(c) for c in self.ci95],
            "min_effect": self.rule.min_effect,
            "p_value": float(self.p_value),
            "p_adjusted": float(p_adjusted),
            "null_median": float(self.null_median),
            **self.where,
        }


def decide(tests: list[Check], alpha: float) -> list[dict[str, Any]]:
    """The alerts among ``tests`` (Holm-adjusted over all of them): threshold crossed, adjusted
    p-value at most ``alpha``, |effect| at least the minimum; global metrics first, then by
    |effect|, largest first."""
    tests = [t for t in tests if t.rule.threshold is not None]
    adjusted = st.holm([t.p_value for t in tests])
    fired = [
        (t, p)
        for t, p in zip(tests, adjusted, strict=True)
        if t.crossed and p <= alpha and abs(t.effect) >= t.rule.min_effect
    ]
    fired.sort(key=lambda tp: (tp[0].rule.metric not in GLOBAL_METRICS, -abs(tp[0].effect)))
    return [t.alert(p) for t, p in fired]


FEATURE_TESTS = {  # metric: (effect column, p-value column, null column)
    "share_change": ("share_change", "share_change_p_value", "share_change_null"),
    "js_distance": ("importance_moved", "js_distance_p_value", "js_distance_null"),
    "psi": ("importance_moved", "psi_p_value", "psi_null"),
    "wasserstein": ("importance_moved", "wasserstein_p_value", "wasserstein_null"),
    "drift_impact": ("drift_impact_effect", "drift_impact_p_value", "drift_impact_null"),
}


def feature_tests(features: pd.DataFrame, settings: DriftSection) -> list[Check]:
    tests = []
    for row in features.to_dict(orient="records"):
        for metric, (effect, p, null) in FEATURE_TESTS.items():
            if metric == "drift_impact" and not math.isfinite(row.get("drift_impact", math.nan)):
                continue
            interval = [row[f"{effect}_ci_low"], row[f"{effect}_ci_high"]]
            rule = rule_for(settings, metric, row["feature"])
            tests.append(Check(rule, [row["feature"]], row[metric], row[effect], interval, row[p], row[null]))
    return tests


def cohort_drift(
    comparison: Comparison, settings: DriftSection, k: int
) -> tuple[list[dict[str, Any]], list[Check]]:
    """Per cohort segment with at least the cohort's ``min_rows`` rows in both runs: NDCG@k and
    each feature's change in share, with intervals and tests (the segment's blocks resampled as
    the run's are). Returns the segments and their tests."""
    segments, tests = [], []
    w = comparison.weights
    for ref, cur in zip(comparison.reference.cohorts, comparison.current.cohorts, strict=True):
        pooled = SegmentSums(
            ref.segments,
            ref.block,
            np.concatenate([ref.counts, cur.counts]),
            np.concatenate([ref.abs_sums, cur.abs_sums], axis=1),
            ref.sums + cur.sums,
        )
        reference = st.Replicates(
            ref.importance(), ref.replicates(w.reference), pooled.replicates(w.null_reference)
        )
        current = st.Replicates(
            cur.importance(), cur.replicates(w.current), pooled.replicates(w.null_current)
        )
        for s, label in enumerate(ref.segments.labels):
            rows = (int(ref.rows()[s]), int(cur.rows()[s]))
            if max(rows) == 0:
                continue
            one = [rep.map(lambda x, s=s: x[..., s, :]) for rep in (reference, current)]
            tested = min(rows) >= ref.segments.cohort.min_rows
            entry, found = segment_drift(one, comparison.features, settings, k, tested)
            where = {"cohort": ref.segments.cohort.column, "segment": label}
            for test in found:
                test.where = where
            segments.append({**where, "reference_rows": rows[0], "current_rows": rows[1], **entry})
            tests += found
    return segments, tests


def segment_drift(
    runs: list[st.Replicates], features: list[str], settings: DriftSection, k: int, tested: bool
) -> tuple[dict[str, Any], list[Check]]:
    """One segment's comparison (see :func:`cohort_drift`)."""
    reference, current = runs
    top = min(k, len(features))
    ref_top = [features[i] for i in np.argsort(-reference.value, kind="stable")[:top]]
    cur_top = [features[i] for i in np.argsort(-current.value, kind="stable")[:top]]
    entry: dict[str, Any] = {
        "tested": bool(tested),
        "top_features": cur_top,
        "entered_top_k": [f for f in cur_top if f not in ref_top],
        "left_top_k": [f for f in ref_top if f not in cur_top],
    }
    if not tested:
        return entry | {"features": _segment_features(features, reference, current, None)}, []
    found = global_statistics(reference, current, features, top)["ndcg_at_k"]
    share = st.Replicates.of(lambda a, b: st.shares(b) - st.shares(a), reference, current)
    columns = _tested("share_change", share, "two_sided") | _interval("share_change", share)
    entry |= {
        "ndcg_at_k": found["value"],
        "ndcg_at_k_ci95": found["ci95"],
        "ndcg_at_k_p_value": found["p_value"],
    }
    entry["features"] = _segment_features(features, reference, current, columns)
    tests = [
        Check(
            rule_for(settings, "ndcg_at_k"),
            entry["entered_top_k"] or cur_top,
            found["value"],
            found["effect"],
            found["effect_ci95"],
            found["p_value"],
            found["null_median"],
        )
    ]
    for i, feature in enumerate(features):
        interval = [columns["share_change_ci_low"][i], columns["share_change_ci_high"][i]]
        rule = rule_for(settings, "share_change", feature)
        change, p, null = (
            columns[c][i] for c in ("share_change", "share_change_p_value", "share_change_null")
        )
        tests.append(Check(rule, [feature], change, change, interval, p, null))
    return entry, tests


def _segment_features(
    features: list[str],
    reference: st.Replicates,
    current: st.Replicates,
    columns: dict[str, np.ndarray] | None,
) -> list[dict[str, Any]]:
    ref_share, cur_share = st.shares(reference.value), st.shares(current.value)
    rows = []
    for i, feature in enumerate(features):
        row = {
            "feature": feature,
            "reference_mean_abs": _number(reference.value[i]),
            "current_mean_abs": _number(current.value[i]),
            "reference_share": _number(ref_share[i]),
            "current_share": _number(cur_share[i]),
            "share_change": _number(cur_share[i] - ref_share[i]),
        }
        if columns is not None:
            row["share_change_ci95"] = [
                _number(columns["share_change_ci_low"][i]),
                _number(columns["share_change_ci_high"][i]),
            ]
            row["share_change_p_value"] = _number(columns["share_change_p_value"][i])
        rows.append(row)
    return rows


def _number(value: Any) -> float | None:
    """A float for JSON: None for NaN or infinity."""
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass
class DriftReport:
    ndcg: float
    spearman: float
    features: pd.DataFrame
    entered_top_k: list[str]
    left_top_k: list[str]
    alerts: list[dict[str, Any]] = field(default_factory=list)
    global_statistics: dict[str, Any] = field(default_factory=dict)
    statistics: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    cohorts: list[dict[str, Any]] = field(default_factory=list)
    cohort_tests: list[Check] = field(default_factory=list)
    cohort_alerts: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """drift.json's comparison keys, strict JSON (None for a NaN: an empty run or segment)."""
        return json_ready(
            {
                "ndcg_at_k": self.ndcg,
                "spearman": self.spearman,
                "entered_top_k": self.entered_top_k,
                "left_top_k": self.left_top_k,
                "alerts": self.alerts,
                "alerted_features": alerted_features(self.alerts),
                "features": self.features.to_dict(orient="records"),
                "global_statistics": self.global_statistics,
                "statistics": self.statistics,
                "inputs": self.inputs,
                "cohorts": self.cohorts,
                "cohort_alerts": self.cohort_alerts,
            }
        )


def json_ready(value: Any) -> Any:
    """``value`` with NumPy scalars as Python numbers and NaN or infinity as None."""
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return _number(value)
    return value


def alerted_features(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The features with a per-feature alert, in the alerts' order (largest effect first), each
    with its largest |effect| and the metrics that fired."""
    found: dict[str, dict[str, Any]] = {}
    for alert in alerts:
        if alert["metric"] in GLOBAL_METRICS or alert.get("cohort"):
            continue
        for feature in alert["features"]:
            entry = found.setdefault(
                feature, {"feature": feature, "effect": abs(alert["effect"]), "metrics": []}
            )
            entry["metrics"].append(alert["metric"])
    return list(found.values())


def run_inputs(
    runs: Sequence[tuple[str, InputDataset]],
) -> tuple[tuple[InputDataset, InputDataset] | None, dict[str, Any]]:
    """Both runs' explained inputs, lined up with their attributions, or None and why not."""
    found = []
    for uri, dataset in runs:
        try:
            inputs = explained_inputs(uri)
            if inputs is None:
                return None, {"note": f"no run manifest naming the explained rows of {uri}"}
            check_aligned(inputs, dataset, primary_rows(dataset))
        except (InputDataError, ConfigError, OSError) as error:
            return None, {"note": f"explained rows of {uri} unavailable: {error}"}
        found.append(inputs)
    return (found[0], found[1]), {"reference": found[0].uri, "current": found[1].uri}


def cohort_segments(
    cohorts: Sequence[CohortSection], inputs: tuple[InputDataset, InputDataset] | None
) -> list[tuple[Segments, Segments]]:
    if not cohorts or inputs is None:
        return []
    pairs = []
    for cohort in cohorts:
        ref, cur = Segments.of(cohort, [read_input_column(side, cohort.column) for side in inputs])
        pairs.append((ref, cur))
    return pairs


def feature_frame(
    comparison: Comparison, settings: DriftSection, inputs: tuple[InputDataset, InputDataset] | None
) -> tuple[pd.DataFrame, st.Replicates, st.Replicates]:
    """Every per-feature metric with its statistics, by current rank; and both runs' importance."""
    ref, cur = comparison.reference, comparison.current
    edges = np.stack(
        [shared_edges(_range(a), _range(b), settings.bins) for a, b in zip(ref.stats, cur.stats, strict=True)]
    ).reshape(len(comparison.features), settings.bins + 1)
    for scan in (ref, cur):
        add_histograms(scan, comparison.features, edges)
    importance = comparison.means(lambda run: run.block_abs(), lambda run: run.block_counts())
    columns = {"feature": comparison.features} | importance_columns(*importance)
    columns |= {f"{name}_mean": _signed_means(scan) for name, scan in (("reference", ref), ("current", cur))}
    columns |= distribution_columns(*comparison.histograms(settings.bins), edges, importance[0])
    if inputs is not None:
        columns |= input_columns(comparison, inputs, importance, settings.bins)
    frame = pd.DataFrame(columns).sort_values("current_rank").reset_index(drop=True)
    return frame, *importance


def _signed_means(scan: RunScan) -> np.ndarray:
    """Each feature's mean attribution (signed) over the run's rows."""
    return np.array([s.total / s.count if s.count else np.nan for s in scan.stats])


def _range(stats: ColumnStats) -> dict[str, float]:
    if not stats.count:
        return {"min": 0.0, "max": 1.0}
    return {"min": stats.low, "max": stats.high}


def compare_runs(
    reference_uri: str, current_uri: str, settings: DriftSection, cohorts: Sequence[CohortSection] = ()
) -> DriftReport:
    """Drift of ``current_uri``'s attributions against ``reference_uri``'s (in a multi-target
    run, of each row's first target: the first listed or the predicted class), over the
    features both have, with the statistics and alerts of the module docstring; ``cohorts``
    adds the comparison per segment (both runs' explained inputs needed)."""
    reference, current = open_attributions(reference_uri), open_attributions(current_uri)
    known = set(attribution_features(reference))
    features = [f for f in attribution_features(current) if f in known]
    inputs, found = run_inputs([(reference_uri, reference), (current_uri, current)])
    segments = cohort_segments(cohorts, inputs)
    comparison = Comparison.of(
        scan_run(reference_uri, reference, features, [s[0] for s in segments]),
        scan_run(current_uri, current, features, [s[1] for s in segments]),
        features,
        settings,
    )
    frame, ref_imp, cur_imp = feature_frame(comparison, settings, inputs)
    k = min(settings.top_k, len(features))
    ref_top = list(frame.sort_values("reference_rank")["feature"][:k])
    cur_top = list(frame["feature"][:k])
    found_globals = global_statistics(ref_imp, cur_imp, features, k)
    report = DriftReport(
        found_globals["ndcg_at_k"]["value"],
        found_globals["spearman"]["value"],
        frame,
        [f for f in cur_top if f not in ref_top],
        [f for f in ref_top if f not in cur_top],
        global_statistics=found_globals,
        inputs=found,
    )
    if cohorts and inputs is None:
        report.inputs["cohorts"] = "cohorts need both runs' explained rows: " + found["note"]
    report.cohorts, report.cohort_tests = cohort_drift(comparison, settings, k) if segments else ([], [])
    report.statistics = statistics_entry(comparison, settings)
    report.alerts = alerts_for(report, settings)
    return report


def statistics_entry(comparison: Comparison, settings: DriftSection) -> dict[str, Any]:
    ref, cur = comparison.reference, comparison.current
    return {
        "method": "Poisson bootstrap on row blocks; null: pairs drawn from the pooled runs",
        "resamples": settings.resamples,
        "seed": settings.seed,
        "alpha": settings.alpha,
        "level": st.LEVEL,
        "adjustment": "holm",
        "rows": {"reference": ref.rows, "current": cur.rows},
        "block_rows": {"reference": ref.block, "current": cur.block},
        "blocks": {"reference": ref.blocks, "current": cur.blocks},
    }


def global_tests(report: DriftReport, settings: DriftSection) -> list[Check]:
    tests = []
    for metric in GLOBAL_METRICS:
        found = report.global_statistics.get(metric)
        if found is None:
            continue
        features = report.entered_top_k or report.features.head(settings.top_k)["feature"].tolist()
        tests.append(
            Check(
                rule_for(settings, metric),
                features if metric == "ndcg_at_k" else [],
                found["value"],
                found["effect"],
                found["effect_ci95"],
                found["p_value"],
                found["null_median"],
            )
        )
    return tests


def alerts_for(report: DriftReport, settings: DriftSection) -> list[dict[str, Any]]:
    """The run's alerts (see :func:`decide`): global and per-feature tests in one Holm family;
    the cohorts' tests in their own (recorded in ``report.cohort_alerts``, and among the run's
    alerts with ``cohort_alerts``)."""
    tests = global_tests(report, settings) + feature_tests(report.features, settings)
    alerts = decide(tests, settings.alpha)
    report.statistics["tests"] = sum(t.rule.threshold is not None for t in tests)
    report.cohort_alerts = decide(report.cohort_tests, settings.alpha)
    return alerts + (report.cohort_alerts if settings.cohort_alerts else [])


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
    loss = [c for c in LOSS_HISTORY_COLUMNS if c in summary]  # runs with ig.loss
    rows = summary[["feature", "mean_abs_attribution", "mean_attribution", "share", "rank", *loss]].copy()
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
    cohorts: Sequence[CohortSection] = (),
    cross_terms: CrossTermsFn | None = None,
) -> dict[str, Any]:
    """Write ``drift.json`` (and ``drift_features.parquet``) under ``output_uri`` comparing
    ``current_uri`` with ``settings.reference_uri``; append the run to the history table.
    ``previous_partition``: the input's partition before this run's, whose run a history
    reference waits for (``drift.wait_for_reference_s``); ``cohorts``: the segments compared
    on their own (``cohorts`` in drift.json); ``cross_terms``: the extra IG pass that splits a
    change between two model versions into the model's and the data's parts
    (``decomposition``, :mod:`.decomposition`). Alerts are logged; with
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
    summary = with_loss_importance(feature_summary(current, primary_rows(current)), current)
    if settings.history_uri:
        extra = {"attributions_uri": current_uri, "partition": partition}
        result["history_rows"] = append_history(settings.history_uri, run, summary, extra)
        result["history"] = settings.history_uri
    if reference:
        report = compare_runs(reference, current_uri, settings, cohorts)
        write_parquet(
            DriftLayout(output_uri).features,
            pa.Table.from_pandas(report.features, preserve_index=False),
        )
        result.update(report.to_dict())
        if (loss := loss_importance_change(reference, current)) is not None:
            result["loss_importance"] = json_ready(loss)
        result["decomposition"] = json_ready(
            decompose_change(report.features, reference, current_uri, cross_terms, settings, output_uri)
        )
    else:
        result.update({"alerts": [], "note": "no reference run (none configured, or no earlier run)"})
    write_json(DriftLayout(output_uri).json, result)
    log_alerts(result, settings)
    return result


def log_alerts(result: dict[str, Any], settings: DriftSection) -> None:
    """Log the alerts (or that there is none); with ``on_alert: fail`` raise :class:`DriftAlert`."""
    for alert in result["alerts"]:
        log.warning(
            "DRIFT ALERT %s=%.4f (threshold %s; effect %.4f, adjusted p %.2g) features=%s",
            alert["metric"],
            alert["value"],
            alert["threshold"],
            alert.get("effect", float("nan")),
            alert.get("p_adjusted", float("nan")),
            alert["features"],
        )
    if not result["alerts"]:
        log.info("no attribution drift alert (NDCG@%d=%s)", settings.top_k, result.get("ndcg_at_k"))
    if result["alerts"] and settings.on_alert == "fail":
        raise DriftAlert(
            f"{len(result['alerts'])} drift alert(s): "
            + "; ".join(f"{a['metric']} {a['features']}" for a in result["alerts"])
        )
