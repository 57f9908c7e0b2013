"""Resampling statistics for summaries and drift, streamed: a Poisson bootstrap on row blocks.

A run's rows are cut, in the order they are read, into at most ``MAX_BLOCKS`` consecutive
blocks of ``block`` rows (one row per block for runs of up to ``MAX_BLOCKS`` rows). One pass
over a column keeps, per block, the sufficient statistics of what is summarised: the row count,
the sum of |attribution| and of attribution, a histogram on shared bins. A bootstrap resample
gives each block an independent Poisson(1) weight (Hanley & MacGibbon 2006; Chamandy et al.
2012, "Estimating uncertainty for massive data streams"), so the resampled sums are one matrix
product ``weights @ block_sums`` and no resampled copy of the rows is ever made: 200 resamples
of 1M rows cost a product of (200 x 2,048) by (2,048 x features). Resampling whole blocks keeps
whatever dependence rows close in the file share (a time-ordered partition), which can only
widen the intervals.

A change between two runs is tested against what resampling the same population produces: the
two runs' blocks are pooled and two resamples of the runs' sizes drawn from the pool (Efron &
Tibshirani 1993, algorithm 16.1); the statistic computed on such pairs is its null
distribution. p-values come from a tail fitted to the null replicates (a normal for signed
statistics, a moment-matched gamma for divergences, which are non-negative), so that p-values
below ``1 / resamples`` are resolved, and are adjusted for the number of tests by Holm's method.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_BLOCKS = 2048  # blocks per run: what the resampling matrices are sized by
LEVEL = 0.95  # confidence level of every interval (``ci95``)
EPS = 1e-6  # empty bins are floored here in PSI
P_FLOOR = 1e-16  # the smallest p-value reported


def block_rows(rows: int, max_blocks: int = MAX_BLOCKS) -> int:
    """Rows per block so that ``rows`` rows make at most ``max_blocks`` blocks."""
    return max(1, -(-int(rows) // max_blocks))


def block_count(rows: int, block: int) -> int:
    return max(1, -(-int(rows) // block))


def add_block_sums(out: np.ndarray, values: np.ndarray, offset: int, block: int) -> None:
    """Add ``values`` (rows first; a chunk whose first row is row ``offset`` of the run) into
    ``out[b]``, the sums per block of ``block`` rows."""
    n = len(values)
    if not n:
        return
    first, last = offset // block, (offset + n - 1) // block
    starts = np.arange(first, last + 1) * block - offset
    starts[0] = 0
    out[first : last + 1] += np.add.reduceat(values, starts, axis=0)


def add_block_counts(
    out: np.ndarray, codes: np.ndarray, offset: int, block: int, weights: np.ndarray | None = None
) -> None:
    """Count the codes (integers in ``[0, out.shape[1])``: a histogram bin, a segment) of a chunk
    whose first row is row ``offset`` of the run, per block: ``out[b, code] += 1`` (or the
    row's weight)."""
    n = len(codes)
    if not n:
        return
    first = offset // block
    blocks = (offset + np.arange(n)) // block - first
    width, used = out.shape[1], int(blocks[-1]) + 1
    counts = np.bincount(blocks * width + codes, weights=weights, minlength=used * width)
    out[first : first + used] += counts.reshape(used, width)


def bin_codes(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The bin of each value on ``edges`` (values outside go to the end bins)."""
    return np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)


def poisson_weights(rng: np.random.Generator, resamples: int, blocks: int, rate: float = 1.0) -> np.ndarray:
    """Bootstrap weights, one row per resample: each block drawn Poisson(``rate``) times."""
    return rng.poisson(rate, size=(resamples, blocks)).astype(np.float64)


@dataclass
class Resampling:
    """The weights of one comparison of a reference run (``reference_blocks``) with a current
    run: independent bootstraps of each run (for intervals), and pairs drawn from the pooled
    blocks with each run's share of the rows (the null: no change)."""

    reference: np.ndarray  # resamples x reference blocks
    current: np.ndarray  # resamples x current blocks
    null_reference: np.ndarray  # resamples x (reference + current blocks)
    null_current: np.ndarray

    @classmethod
    def draw(
        cls, resamples: int, seed: int, reference_blocks: int, current_blocks: int, reference_share: float
    ) -> Resampling:
        rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)]
        pooled = reference_blocks + current_blocks
        share = min(max(reference_share, 0.0), 1.0)
        return cls(
            poisson_weights(rngs[0], resamples, reference_blocks),
            poisson_weights(rngs[1], resamples, current_blocks),
            poisson_weights(rngs[2], resamples, pooled, share),
            poisson_weights(rngs[3], resamples, pooled, 1.0 - share),
        )


def resampled_means(weights: np.ndarray, sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Means of each resample: ``(weights @ sums) / (weights @ counts)`` (NaN for an empty one)."""
    totals = weights @ counts
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (weights @ sums) / (totals[:, None] if sums.ndim == 2 else totals)
    return np.where(np.isfinite(means), means, np.nan)


def interval(replicates: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of bootstrap replicates (resamples on axis 0; NaN where none is finite)."""
    tail = (1 - level) / 2 * 100
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN slice: an empty run or segment
        low, high = np.nanpercentile(replicates, [tail, 100 - tail], axis=0)
    return low, high


def null_median(replicates: np.ndarray) -> np.ndarray:
    """Median of null replicates (resamples on axis 0): what resampling alone produces."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(replicates, axis=0)


def shares(importance: np.ndarray) -> np.ndarray:
    """Each feature's share of the total (features on the last axis)."""
    total = importance.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, importance / np.where(total > 0, total, 1.0), 0.0)


def ranks(importance: np.ndarray) -> np.ndarray:
    """Rank 1 for the largest, along the last axis (ties by position, as ``method='first'``)."""
    order = np.argsort(-importance, axis=-1, kind="stable")
    out = np.empty_like(order)
    np.put_along_axis(out, order, np.arange(1, importance.shape[-1] + 1), axis=-1)
    return out


def normalised(counts: np.ndarray) -> np.ndarray:
    """Histograms (bins on the last axis) as probabilities."""
    total = counts.sum(axis=-1, keepdims=True)
    return counts / np.where(total > 0, total, 1.0)


def js_distance(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon distance, base 2, of distributions on the last axis: 0 same, 1 disjoint."""
    m = (p + q) / 2

    def kl(x: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            terms = np.where(x > 0, x * np.log2(np.where(x > 0, x, 1.0) / np.where(m > 0, m, 1.0)), 0.0)
        return terms.sum(axis=-1)

    return np.sqrt(np.maximum(0.5 * kl(p) + 0.5 * kl(q), 0.0))


def psi(expected: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Population stability index, ``sum((a - e) * ln(a / e))``, empty bins floored at 1e-6."""
    e, a = np.maximum(expected, EPS), np.maximum(actual, EPS)
    return np.sum((a - e) * np.log(a / e), axis=-1)


def wasserstein(p: np.ndarray, q: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """1-D Wasserstein distance of two distributions on the same bins:
    ``sum |CDF_p - CDF_q| * bin width``."""
    gaps = np.abs(np.cumsum(p, axis=-1) - np.cumsum(q, axis=-1))[..., :-1]
    return np.sum(gaps * np.diff(edges, axis=-1)[..., :-1], axis=-1)


def _normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2))


def p_value(observed: float, null: np.ndarray, kind: str) -> float:
    """p-value of ``observed`` against its null replicates. ``kind``: ``two_sided`` (a signed
    statistic, a normal with the replicates' mean and spread), ``lower`` (small is a change,
    e.g. NDCG; normal) or ``upper`` (a non-negative divergence: a gamma with the replicates'
    mean and variance, its tail by the Wilson-Hilferty cube root). A fitted tail resolves
    p-values far below ``1 / resamples``, but not to many digits: they are floored at
    ``P_FLOOR`` (read: far beyond anything resampling produced)."""
    return max(_p_value(observed, null, kind), P_FLOOR)


def _p_value(observed: float, null: np.ndarray, kind: str) -> float:
    null = null[np.isfinite(null)]
    if not np.isfinite(observed) or len(null) < 2:
        return 1.0
    mean, sd = float(null.mean()), float(null.std(ddof=1))
    if sd <= 1e-12 * max(1.0, abs(mean)):
        extreme = observed > mean if kind == "upper" else observed < mean if kind == "lower" else False
        return 0.0 if extreme or (kind == "two_sided" and abs(observed - mean) > 1e-12) else 1.0
    if kind == "two_sided":
        return min(1.0, 2 * _normal_sf(abs(observed - mean) / sd))
    if kind == "lower":
        return _normal_sf((mean - observed) / sd)
    if mean <= 0 or observed <= 0:
        return 1.0
    shape = (mean / sd) ** 2
    scaled = (observed / mean) ** (1 / 3)
    return _normal_sf((scaled - (1 - 1 / (9 * shape))) / math.sqrt(1 / (9 * shape)))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment: the family-wise error rate stays at the level compared with."""
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    if not m:
        return []
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    adjusted = np.empty(m)
    adjusted[order] = stepped
    return adjusted.tolist()


@dataclass
class Replicates:
    """A statistic of (reference, current): its value, its bootstrap replicates (each run
    resampled on its own; resamples on axis 0) and its null replicates (both drawn from the
    pooled runs)."""

    value: np.ndarray
    boot: np.ndarray
    null: np.ndarray

    @classmethod
    def of(
        cls, statistic: Callable[[Any, Any], Any], reference: Replicates, current: Replicates
    ) -> Replicates:
        """``statistic`` of two per-run quantities, each given as (value, boot, null) replicates."""
        return cls(
            np.asarray(statistic(reference.value, current.value)),
            np.asarray(statistic(reference.boot, current.boot)),
            np.asarray(statistic(reference.null, current.null)),
        )

    def map(self, function: Callable[[np.ndarray], np.ndarray]) -> Replicates:
        return Replicates(function(self.value), function(self.boot), function(self.null))


def ndcg_rows(reference: np.ndarray, current: np.ndarray, k: int) -> np.ndarray:
    """NDCG@k of each row of ``current`` (resamples x features) with the same row of
    ``reference`` as relevance (:func:`ndcg_at_k` on arrays; ties by position)."""
    discount = 1 / np.log2(np.arange(k) + 2)
    ranked = np.argsort(-current, axis=-1, kind="stable")[..., :k]
    dcg = (np.take_along_axis(reference, ranked, axis=-1) * discount).sum(axis=-1)
    idcg = (-np.sort(-reference, axis=-1)[..., :k] * discount).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(idcg > 0, dcg / np.where(idcg > 0, idcg, 1.0), 1.0)


def spearman_rows(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Spearman correlation of each row of two (resamples x features) arrays."""
    a, b = ranks(reference).astype(np.float64), ranks(current).astype(np.float64)
    a -= a.mean(axis=-1, keepdims=True)
    b -= b.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(axis=-1) / np.sqrt((a * a).sum(axis=-1) * (b * b).sum(axis=-1))
