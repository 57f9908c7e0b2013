"""Adaptive step counts: refine each row until its completeness error meets the tolerance.

A row passes the completeness check when ``|sum(attr) - (F(x) - F(x'))| <= atol + rtol *
|F(x) - F(x')|`` (``rtol`` is ``ig.tolerance``; ``atol`` is ``ig.atol`` times the output's scale,
:attr:`~ig_airflow.core.backend.Attributor.output_scale`: 1e-4 of a probability by default). A
row that meets it only through ``atol`` (its prediction barely moved from the baseline, so a
relative error means nothing) is flagged ``barely_moved``; a row that misses it is not
``converged``.

``ig.method: adaptive_trapezoid`` (the default, :func:`nested_attributions`) starts every row
from ``n_steps`` equally spaced points and splits, row by row, the intervals whose exact
trapezoid error is largest (:mod:`ig_airflow.core.quadrature`), keeping every gradient already
evaluated, until the errors' absolute sum (a bound on the completeness error) meets the
tolerance or the row has ``max_steps`` points. The fixed rules (``gausslegendre`` ...,
:func:`doubling_attributions`) recompute rows above the tolerance with doubled steps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ig_airflow.config import IGSection
from ig_airflow.core.backend import Attributor, FixedStepResult, PathGradients
from ig_airflow.core.quadrature import ADAPTIVE, interval_errors, intervals_to_split, trapezoid_weights

log = logging.getLogger(__name__)

MIN_WIDTH = 1e-6  # narrower intervals are not split (float32 path points resolve about 1e-7)
Evaluate = Callable[[np.ndarray, np.ndarray], PathGradients]  # (block rows, alphas [R, m]) -> integrand


@dataclass
class RowAttributions:
    """Result for a block of B rows with T targets each; every array has one entry per
    (row, target), rows major (B * T entries; B with one target)."""

    attributions: np.ndarray  # [B*T, F]
    prediction: np.ndarray
    baseline_prediction: np.ndarray
    delta: np.ndarray  # sum(attr) - (F(x) - F(x')) at the final step count
    completeness_error: np.ndarray  # |delta| / |F(x) - F(x')|
    n_steps: np.ndarray  # final step count (gradient points) per (row, target)
    converged: np.ndarray  # bool: |delta| <= atol + rtol |change| (always True without a tolerance)
    gradient_evaluations: int  # interpolated rows x targets evaluated (backward passes), all passes
    targets: np.ndarray  # int [B, T] output column of each target
    barely_moved: np.ndarray | None = None  # bool: converged only through atol (tiny change)


@dataclass(frozen=True)
class Completeness:
    """The completeness check: ``|delta| <= atol + rtol * |change|`` (no check when rtol is None)."""

    rtol: float | None
    atol: float

    @classmethod
    def of(cls, settings: IGSection, output_scale: float) -> Completeness:
        return cls(settings.tolerance, settings.atol * output_scale)

    def bound(self, change: np.ndarray) -> np.ndarray:
        """The largest error that passes, per entry."""
        return (self.rtol or 0.0) * np.abs(change) + self.atol

    def meets(self, delta: np.ndarray, change: np.ndarray) -> np.ndarray:
        if self.rtol is None:
            return np.ones(len(delta), dtype=bool)
        return np.abs(delta) <= self.bound(change)

    def barely_moved(self, delta: np.ndarray, change: np.ndarray) -> np.ndarray:
        """Rows that pass only through ``atol``: above the relative tolerance, within the bound."""
        if self.rtol is None:
            return np.zeros(len(delta), dtype=bool)
        return self.meets(delta, change) & (np.abs(delta) > self.rtol * np.abs(change))


def adaptive_attributions(
    attributor: Attributor,
    numeric: np.ndarray,
    categorical: np.ndarray,
    settings: IGSection,
    targets: np.ndarray | None = None,
) -> RowAttributions:
    """Explain rows as ``settings.method`` says: nested refinement (``adaptive_trapezoid``) or a
    fixed rule with doubled steps for the rows above the tolerance."""
    if settings.method == ADAPTIVE:
        return nested_attributions(attributor, numeric, categorical, settings, targets)
    return doubling_attributions(attributor, numeric, categorical, settings, targets)


def finish(
    attributions: np.ndarray,
    prediction: np.ndarray,
    baseline_prediction: np.ndarray,
    delta: np.ndarray,
    n_steps: np.ndarray,
    check: Completeness,
    evaluations: int,
    targets: np.ndarray,
) -> RowAttributions:
    """The result of a block with its completeness check."""
    change = prediction - baseline_prediction
    return RowAttributions(
        attributions=attributions,
        prediction=prediction,
        baseline_prediction=baseline_prediction,
        delta=delta,
        completeness_error=np.abs(delta) / np.maximum(np.abs(change), 1e-12),
        n_steps=n_steps,
        converged=check.meets(delta, change),
        gradient_evaluations=int(evaluations),
        targets=targets,
        barely_moved=check.barely_moved(delta, change),
    )


def doubling_attributions(
    attributor: Attributor,
    numeric: np.ndarray,
    categorical: np.ndarray,
    settings: IGSection,
    targets: np.ndarray | None = None,
) -> RowAttributions:
    """Explain rows with ``settings.n_steps``, then recompute rows with a (row, target) above the
    tolerance (all of the row's targets, which share its forward passes) with doubled steps."""
    steps = settings.n_steps
    first = attributor.attribute(numeric, categorical, steps, targets)
    targets = first.targets
    n_targets = targets.shape[1]
    check = Completeness.of(settings, attributor.output_scale)
    attributions = np.array(_chosen(first, settings), dtype=np.float64, copy=True)
    prediction = first.prediction.astype(np.float64)
    baseline_prediction = first.baseline_prediction.astype(np.float64)
    change = prediction - baseline_prediction
    delta = first.attributions.sum(axis=1) - change
    n_steps = np.full(len(prediction), steps, dtype=np.int64)
    evaluations = len(numeric) * steps * n_targets
    pending = np.flatnonzero(~check.meets(delta, change))
    while len(pending) and steps < settings.max_steps:
        steps = min(steps * 2, settings.max_steps)
        rows = np.unique(pending // n_targets)
        entries = (rows[:, None] * n_targets + np.arange(n_targets)).reshape(-1)
        refined = attributor.attribute(numeric[rows], categorical[rows], steps, targets[rows])
        evaluations += len(rows) * steps * n_targets
        prediction[entries] = refined.prediction  # same rows; keeps delta consistent bit for bit
        attributions[entries] = _chosen(refined, settings)
        delta[entries] = refined.attributions.sum(axis=1) - (
            prediction[entries] - baseline_prediction[entries]
        )
        n_steps[entries] = steps
        log.debug("adaptive IG: %d of %d rows refined at %d steps", len(rows), len(numeric), steps)
        pending = entries[~check.meets(delta[entries], change[entries])]
    return finish(attributions, prediction, baseline_prediction, delta, n_steps, check, evaluations, targets)


def _chosen(result: FixedStepResult, settings: IGSection) -> np.ndarray:
    return result.attributions if settings.multiply_by_inputs else result.integrated_gradients


@dataclass
class NodeSet:
    """The evaluated path points of the rows still being refined, in the order they were
    evaluated: per row ``alphas`` (``[R, C]``, the first ``count`` real, padding at 2 after
    them), and per (row, target, point) ``d score / d alpha`` (``rates``), the score and the
    explained integrand of every feature (``values`` ``[R, T, C, F]``, never reordered)."""

    rows: np.ndarray
    alphas: np.ndarray
    count: np.ndarray
    rates: np.ndarray
    scores: np.ndarray
    values: np.ndarray
    multiply_by_inputs: bool = True

    @classmethod
    def first(cls, alphas: np.ndarray, result: PathGradients, multiply_by_inputs: bool) -> NodeSet:
        rates, scores, values = _per_point(result, len(alphas), multiply_by_inputs)
        rows, n = alphas.shape
        return cls(np.arange(rows), alphas, np.full(rows, n), rates, scores, values, multiply_by_inputs)

    def subset(self, keep: np.ndarray) -> NodeSet:
        """These rows, with room for their largest count of points only."""
        width = int(self.count[keep].max(initial=0))
        arrays = [self.rows[keep], self.alphas[keep, :width], self.count[keep]]
        arrays += [getattr(self, f)[keep][:, :, :width] for f in ("rates", "scores", "values")]
        return NodeSet(*arrays, multiply_by_inputs=self.multiply_by_inputs)

    def ordered(self) -> tuple[np.ndarray, np.ndarray]:
        """The order that sorts each row's points, and the sorted points (padding at 1: it adds
        nothing to the trapezoid rule)."""
        order = np.argsort(self.alphas, axis=-1, kind="stable")
        return order, np.minimum(np.take_along_axis(self.alphas, order, axis=-1), 1.0)

    def errors(self, order: np.ndarray, alphas: np.ndarray) -> np.ndarray:
        """Each interval's signed trapezoid error per (row, target), 0 past the real points."""
        rates = np.take_along_axis(self.rates, order[:, None, :], axis=-1)
        scores = np.take_along_axis(self.scores, order[:, None, :], axis=-1)
        errors = interval_errors(alphas[:, None, :], rates, scores)
        real = np.arange(errors.shape[-1]) < (self.count - 1)[:, None]
        return np.where(real[:, None, :], errors, 0.0)

    def integrals(self) -> tuple[np.ndarray, np.ndarray]:
        """Per (row, target): the integral of each feature and of the rate (the sum of attributions)."""
        order, alphas = self.ordered()
        weights = np.zeros(alphas.shape)
        np.put_along_axis(weights, order, trapezoid_weights(alphas), axis=-1)
        return (
            np.einsum("rc,rtcf->rtf", weights, self.values),
            np.einsum("rc,rtc->rt", weights, self.rates),
        )

    def to_split(self, tolerance: np.ndarray, max_steps: int) -> np.ndarray:
        """Intervals between sorted points to split (``[R, C-1]``): where a target's error bound
        exceeds its tolerance (``[R, T]``), as many as :func:`intervals_to_split` predicts
        (rounded up to a power of two with the next largest errors, so that few rows differ in
        how many points they add), within ``max_steps`` points per row, largest first."""
        order, alphas = self.ordered()
        errors = self.errors(order, alphas)
        rows, n_targets, n = errors.shape
        wide = np.diff(alphas, axis=-1) > MIN_WIDTH
        per_target = intervals_to_split(
            errors.reshape(-1, n), tolerance.reshape(-1), np.repeat(wide, n_targets, axis=0)
        )
        needed = per_target.reshape(rows, n_targets, n).any(axis=1).sum(axis=1)
        needed = np.where(needed > 0, 2 ** np.ceil(np.log2(np.maximum(needed, 1))).astype(int), 0)
        needed = np.minimum(needed, np.maximum(max_steps - self.count, 0))
        ranking = np.where(wide, (np.abs(errors) / tolerance[:, :, None]).max(axis=1), -1.0)
        ranked = np.argsort(-ranking, axis=-1, kind="stable")
        split = np.zeros((rows, n), dtype=bool)
        np.put_along_axis(split, ranked, np.arange(n)[None, :] < needed[:, None], axis=-1)
        return split & wide

    def extend(self, split: np.ndarray, evaluate: Evaluate) -> int:
        """Evaluate the midpoints of the ``split`` intervals (one call for every row, NaN padding
        the rows that add fewer) and add them. Returns the points evaluated."""
        _, alphas = self.ordered()
        new = split.sum(axis=1)
        width = int(new.max(initial=0))
        ranks = np.cumsum(split, axis=1) - 1
        points = np.full((len(new), width), np.nan)
        rows, intervals = np.nonzero(split)
        points[rows, ranks[rows, intervals]] = (alphas[rows, intervals] + alphas[rows, intervals + 1]) / 2.0
        pad = [(0, 0), (0, 0), (0, width)]
        self.alphas = np.pad(self.alphas, [(0, 0), (0, width)], constant_values=2.0)
        self.rates, self.scores = np.pad(self.rates, pad), np.pad(self.scores, pad)
        self.values = np.pad(self.values, [*pad, (0, 0)])
        group = np.flatnonzero(new)
        if len(group):
            self._place(group, points[group], evaluate(self.rows[group], points[group]))
        return int(new.sum())

    def _place(self, group: np.ndarray, points: np.ndarray, result: PathGradients) -> None:
        """Write the real ones of ``points`` (``[G, m]``, NaN padding) after each row's points."""
        rows, new = np.nonzero(np.isfinite(points))
        slots = self.count[group][rows] + new
        self.alphas[group[rows], slots] = points[rows, new]
        rates, scores, values = _per_point(result, len(group), self.multiply_by_inputs)
        self.rates[group[rows], :, slots] = rates[rows, :, new]
        self.scores[group[rows], :, slots] = scores[rows, :, new]
        self.values[group[rows], :, slots] = values[rows, :, new]
        self.count[group] += np.isfinite(points).sum(axis=1)


def _per_point(result: PathGradients, rows: int, multiply_by_inputs: bool) -> tuple[np.ndarray, ...]:
    """``d score / d alpha``, the score and the explained integrand as ``[rows, T, n(, F)]``."""
    n = result.scores.shape[-1]
    integrand = result.attributions if multiply_by_inputs else result.gradients
    return (
        result.attributions.sum(-1).reshape(rows, -1, n),
        result.scores.reshape(rows, -1, n),
        integrand.reshape(rows, -1, n, integrand.shape[-1]),
    )


def nested_attributions(
    attributor: Attributor,
    numeric: np.ndarray,
    categorical: np.ndarray,
    settings: IGSection,
    targets: np.ndarray | None = None,
) -> RowAttributions:
    """The composite trapezoid rule on nested, per-row points: ``settings.n_steps`` equally
    spaced, then the midpoints of the intervals :meth:`NodeSet.to_split` picks, round by round,
    until each row's error bound meets the tolerance (or ``max_steps``)."""
    alphas = np.tile(np.linspace(0.0, 1.0, settings.n_steps), (len(numeric), 1))
    first = attributor.path_gradients(numeric, categorical, alphas, targets)
    targets = first.targets
    n_targets = targets.shape[1]
    check = Completeness.of(settings, attributor.output_scale)
    change = first.prediction - first.baseline_prediction
    attributions = np.zeros((len(change), first.attributions.shape[-1]))
    sums, n_steps = np.zeros(len(change)), np.zeros(len(change), dtype=np.int64)
    tolerance = check.bound(change).reshape(-1, n_targets)

    def evaluate(rows: np.ndarray, points: np.ndarray) -> PathGradients:
        return attributor.path_gradients(numeric[rows], categorical[rows], points, targets[rows])

    nodes = NodeSet.first(alphas, first, settings.multiply_by_inputs)
    evaluations = alphas.size
    while len(nodes.rows):
        split = nodes.to_split(tolerance[nodes.rows], settings.max_steps)
        if check.rtol is None:
            split[:] = False
        done = ~split.any(axis=1)
        entries = (nodes.rows[done, None] * n_targets + np.arange(n_targets)).reshape(-1)
        finished = nodes.subset(done)
        integrals, totals = finished.integrals()
        attributions[entries] = integrals.reshape(len(entries), attributions.shape[1])
        sums[entries] = totals.reshape(-1)
        n_steps[entries] = np.repeat(finished.count, n_targets)
        nodes = nodes.subset(~done)
        evaluations += nodes.extend(split[~done], evaluate)
        log.debug("adaptive IG: %d of %d rows refined", len(nodes.rows), len(numeric))
    delta = sums - change
    return finish(
        attributions,
        first.prediction.astype(np.float64),
        first.baseline_prediction.astype(np.float64),
        delta,
        n_steps,
        check,
        evaluations * n_targets,
        targets,
    )
