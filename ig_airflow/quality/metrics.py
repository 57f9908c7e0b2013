"""Faithfulness and stability metrics of attributions, framework-neutral (NumPy over a scoring
function that calls the model through its backend).

- **Deletion and insertion curves**: features set to their baseline (deletion) or restored
  from it (insertion) in a given order, the model's output after each step, normalised so the
  full row is 1 and the baseline 0; the area under each curve (deletion: lower is better,
  insertion: higher). Orders: by |attribution| per row, random per row, permutation importance.
- **Infidelity** (Yeh et al. 2019, as ``captum.metrics.infidelity``): the mean squared
  difference between ``I . attribution`` and ``f(x) - f(x - I)`` over perturbations ``I``.
- **Max-sensitivity** (Yeh et al. 2019, as ``captum.metrics.sensitivity_max``): the largest
  relative change of the attributions under small input perturbations.

A scoring function ``score(numeric, categorical, rows)`` returns, for each encoded row, the
score of the target explained for sample row ``rows[i]``; an explanation function
``explain(numeric, categorical, rows)`` returns attributions ``[N, F]`` in feature order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ig_airflow.spec import InputSpec

ScoreFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
ExplainFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
# (numeric, categorical, rng) -> (perturbation I [N, F], perturbed numeric, perturbed categorical)
InfidelityPerturbation = Callable[
    [np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray, np.ndarray]
]
# (numeric, rng) -> perturbed numeric
SensitivityPerturbation = Callable[[np.ndarray, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class FeatureColumns:
    """Where each feature (in the spec's feature order) lives in the encoded arrays, and its
    baseline value there."""

    numeric: np.ndarray  # int [F]: the numeric column of each feature, -1 for categorical ones
    categorical: np.ndarray  # int [F]: the categorical column, -1 for numeric ones
    baseline_numeric: np.ndarray
    baseline_categorical: np.ndarray

    @classmethod
    def of(
        cls, spec: InputSpec, baseline_numeric: np.ndarray, baseline_categorical: np.ndarray
    ) -> FeatureColumns:
        numeric = {name: j for j, name in enumerate(spec.numeric_names)}
        categorical = {name: j for j, name in enumerate(spec.categorical_names)}
        names = spec.feature_names
        return cls(
            np.array([numeric.get(n, -1) for n in names], dtype=np.int64),
            np.array([categorical.get(n, -1) for n in names], dtype=np.int64),
            np.asarray(baseline_numeric, dtype=np.float64),
            np.asarray(baseline_categorical, dtype=np.int64),
        )

    @property
    def count(self) -> int:
        return len(self.numeric)

    def at_baseline(
        self, numeric: np.ndarray, categorical: np.ndarray, mask: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the rows with the features where ``mask`` ``[N, F]`` is True at their baseline."""
        numeric, categorical = numeric.copy(), categorical.copy()
        for f in range(self.count):
            rows = mask[:, f]
            if self.numeric[f] >= 0:
                numeric[rows, self.numeric[f]] = self.baseline_numeric[self.numeric[f]]
            else:
                categorical[rows, self.categorical[f]] = self.baseline_categorical[self.categorical[f]]
        return numeric, categorical

    def at_baseline_mask(self, numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
        """``[N, F]``: whether each feature of each row equals its baseline value."""
        mask = np.zeros((len(numeric), self.count), dtype=bool)
        for f in range(self.count):
            if self.numeric[f] >= 0:
                mask[:, f] = numeric[:, self.numeric[f]] == self.baseline_numeric[self.numeric[f]]
            else:
                column = self.categorical[f]
                mask[:, f] = categorical[:, column] == self.baseline_categorical[column]
        return mask


def order_by_magnitude(attributions: np.ndarray) -> np.ndarray:
    """Each row's features by decreasing |attribution| (ties in feature order)."""
    return np.argsort(-np.abs(attributions), axis=1, kind="stable")


def random_order(rows: int, features: int, rng: np.random.Generator) -> np.ndarray:
    return np.argsort(rng.random((rows, features)), axis=1)


def curve_steps(features: int, points: int) -> np.ndarray:
    """How many features are removed at each point: every count when there are few features."""
    if features + 1 <= points:
        return np.arange(features + 1)
    return np.unique(np.round(np.linspace(0, features, points)).astype(np.int64))


def removal_curves(
    score: ScoreFn,
    numeric: np.ndarray,
    categorical: np.ndarray,
    columns: FeatureColumns,
    order: np.ndarray,
    steps: np.ndarray,
    insertion: bool = False,
) -> np.ndarray:
    """Raw scores ``[N, len(steps)]``: with the first ``steps[p]`` features of each row's
    ``order`` at the baseline (deletion) or, from the baseline, restored (insertion)."""
    n, f = order.shape
    rank = np.empty_like(order)
    rank[np.arange(n)[:, None], order] = np.arange(f)[None, :]
    mask = rank[:, None, :] < steps[None, :, None]  # [N, P, F]: removed (or restored) features
    mask = mask.reshape(-1, f)
    points = len(steps)
    num, cat = np.repeat(numeric, points, axis=0), np.repeat(categorical, points, axis=0)
    num, cat = columns.at_baseline(num, cat, ~mask if insertion else mask)
    return score(num, cat, np.repeat(np.arange(n), points)).reshape(n, points)


def normalised_curves(raw: np.ndarray, insertion: bool, min_change: float) -> tuple[np.ndarray, np.ndarray]:
    """Curves scaled so the full row is 1 and the baseline 0, and which rows moved enough
    (``|f(x) - f(baseline)| >= min_change``) for that to mean anything."""
    full, base = (raw[:, -1], raw[:, 0]) if insertion else (raw[:, 0], raw[:, -1])
    change = full - base
    moved = np.abs(change) >= min_change
    scaled = (raw - base[:, None]) / np.where(moved, change, 1.0)[:, None]
    return scaled, moved


def area_under(curves: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Trapezoid area of each curve (the last axis) over the fraction of features removed (0..1)."""
    x = steps / steps[-1]
    return np.sum((curves[..., 1:] + curves[..., :-1]) * np.diff(x), axis=-1) / 2.0


def mean_interval(values: np.ndarray, z: float = 1.96) -> tuple[float, float, float]:
    """Mean of ``values`` and its normal-approximation confidence interval (95% by default)."""
    mean = float(np.mean(values))
    half = z * float(np.std(values, ddof=1)) / np.sqrt(len(values)) if len(values) > 1 else float("inf")
    return mean, mean - half, mean + half


def permutation_importance(
    score: ScoreFn,
    numeric: np.ndarray,
    categorical: np.ndarray,
    columns: FeatureColumns,
    rng: np.random.Generator,
) -> np.ndarray:
    """Per feature, the mean |change of the score| when its values are shuffled across the rows."""
    n = len(numeric)
    rows = np.arange(n)
    full = score(numeric, categorical, rows)
    nums, cats = [], []
    for f in range(columns.count):
        num, cat = numeric.copy(), categorical.copy()
        shuffled = rng.permutation(n)
        if columns.numeric[f] >= 0:
            num[:, columns.numeric[f]] = numeric[shuffled, columns.numeric[f]]
        else:
            cat[:, columns.categorical[f]] = categorical[shuffled, columns.categorical[f]]
        nums.append(num)
        cats.append(cat)
    permuted = score(np.concatenate(nums), np.concatenate(cats), np.tile(rows, columns.count))
    return np.abs(permuted.reshape(columns.count, n) - full[None, :]).mean(axis=1)


def baseline_mask_perturbation(columns: FeatureColumns, probability: float) -> InfidelityPerturbation:
    """Each feature set to its baseline with ``probability``: ``I`` is the mask, so that
    ``I . attribution`` is the attribution of the removed features (IG attributions carry the
    ``x - baseline`` factor)."""

    def perturb(numeric: np.ndarray, categorical: np.ndarray, rng: np.random.Generator):
        mask = rng.random((len(numeric), columns.count)) < probability
        return (mask.astype(np.float64), *columns.at_baseline(numeric, categorical, mask))

    return perturb


def infidelity(
    score: ScoreFn,
    numeric: np.ndarray,
    categorical: np.ndarray,
    attributions: np.ndarray,
    perturb: InfidelityPerturbation,
    samples: int,
    rng: np.random.Generator,
    normalize: bool = False,
) -> np.ndarray:
    """Infidelity per row, as ``captum.metrics.infidelity`` computes it: ``perturb`` is called
    once on the rows repeated ``samples`` times each (``repeat_interleave``)."""
    n = len(numeric)
    rows = np.repeat(np.arange(n), samples)
    num, cat = np.repeat(numeric, samples, axis=0), np.repeat(categorical, samples, axis=0)
    perturbation, num_p, cat_p = perturb(num, cat, rng)
    explained = np.sum(np.repeat(attributions, samples, axis=0) * perturbation, axis=1).reshape(n, samples)
    change = (score(num, cat, rows) - score(num_p, cat_p, rows)).reshape(n, samples)
    if not normalize:
        return np.sum((explained - change) ** 2, axis=1) / samples
    aa, ab, bb = (explained**2).sum(1), (explained * change).sum(1), (change**2).sum(1)
    beta = ab / np.where(aa != 0, aa, 1.0)
    return (beta * beta * aa - 2 * beta * ab + bb) / samples


def uniform_perturbation(radius: np.ndarray | float) -> SensitivityPerturbation:
    """Numeric inputs moved uniformly within ``radius`` (per column or one for all), as captum's
    default perturbation of ``sensitivity_max`` (an L-infinity ball)."""

    def perturb(numeric: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return numeric + rng.uniform(-1.0, 1.0, numeric.shape) * radius

    return perturb


def max_sensitivity(
    explain: ExplainFn,
    numeric: np.ndarray,
    categorical: np.ndarray,
    attributions: np.ndarray,
    perturb: SensitivityPerturbation,
    samples: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Max-sensitivity per row, as ``captum.metrics.sensitivity_max`` (Frobenius norm): the
    largest ``||e(x) - e(x + d)|| / ||e(x)||`` over ``samples`` perturbations ``d``."""
    n = len(numeric)
    rows = np.repeat(np.arange(n), samples)
    num = perturb(np.repeat(numeric, samples, axis=0), rng)
    perturbed = explain(num, np.repeat(categorical, samples, axis=0), rows)
    norm = np.linalg.norm(attributions, axis=1)
    norm = np.where(norm == 0, 1.0, norm)
    changes = np.linalg.norm(np.repeat(attributions, samples, axis=0) - perturbed, axis=1) / np.repeat(
        norm, samples
    )
    return changes.reshape(n, samples).max(axis=1)


def rank_correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Spearman correlation of each row of ``a`` with the same row of ``b`` over the features
    where ``mask`` is True (all by default): average ranks for ties; NaN for a row with fewer
    than 3 such features, 0 for a row that is constant."""
    mask = np.ones(a.shape, dtype=bool) if mask is None else mask
    out = np.full(len(a), np.nan)
    for i in range(len(a)):
        if mask[i].sum() < 3:
            continue
        ra = pd.Series(a[i, mask[i]]).rank().to_numpy() - (mask[i].sum() + 1) / 2
        rb = pd.Series(b[i, mask[i]]).rank().to_numpy() - (mask[i].sum() + 1) / 2
        denominator = np.sqrt((ra**2).sum() * (rb**2).sum())
        out[i] = (ra * rb).sum() / denominator if denominator > 0 else 0.0
    return out
