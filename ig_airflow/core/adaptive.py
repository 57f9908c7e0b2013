"""Adaptive step counts: refine the rows whose completeness error is above the tolerance.

An :class:`~ig_airflow.core.backend.Attributor` computes attributions for a block of rows at a
fixed step count. This module runs the first pass, measures each row's completeness error
``|sum(attr) - (F(x) - F(x'))|``, recomputes the rows above the tolerance with doubled steps
up to ``max_steps``, and flags rows that still miss it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ig_airflow.config import IGSection
from ig_airflow.core.backend import Attributor, FixedStepResult

log = logging.getLogger(__name__)


@dataclass
class RowAttributions:
    """Result for a block of B rows with T targets each; every array has one entry per
    (row, target), rows major (B * T entries; B with one target)."""

    attributions: np.ndarray  # [B*T, F]
    prediction: np.ndarray
    baseline_prediction: np.ndarray
    delta: np.ndarray  # sum(attr) - (F(x) - F(x')) at the final step count
    completeness_error: np.ndarray  # |delta| / |F(x) - F(x')|
    n_steps: np.ndarray  # final step count per (row, target)
    converged: np.ndarray  # bool: met the tolerance (always True without a tolerance)
    gradient_evaluations: int  # interpolated rows x targets evaluated (backward passes), all passes
    targets: np.ndarray  # int [B, T] output column of each target


def _completeness(result: FixedStepResult) -> tuple[np.ndarray, np.ndarray]:
    change = result.prediction - result.baseline_prediction
    delta = result.attributions.sum(axis=1) - change
    return delta, np.abs(delta) / np.maximum(np.abs(change), 1e-12)


def _meets(delta: np.ndarray, change: np.ndarray, settings: IGSection) -> np.ndarray:
    if settings.tolerance is None:
        return np.ones(len(delta), dtype=bool)
    return np.abs(delta) <= settings.tolerance * np.abs(change) + settings.atol


def adaptive_attributions(
    attributor: Attributor,
    numeric: np.ndarray,
    categorical: np.ndarray,
    settings: IGSection,
    targets: np.ndarray | None = None,
) -> RowAttributions:
    """Explain rows with ``settings.n_steps``, then refine rows with a (row, target) above the
    tolerance (all of the row's targets, which share its forward passes)."""
    steps = settings.n_steps
    first = attributor.attribute(numeric, categorical, steps, targets)
    targets = first.targets
    n_targets = targets.shape[1]
    output = first.integrated_gradients if not settings.multiply_by_inputs else first.attributions
    attributions = np.array(output, dtype=np.float64, copy=True)
    prediction = first.prediction.astype(np.float64)
    baseline_prediction = first.baseline_prediction.astype(np.float64)
    delta, error = _completeness(first)
    change = prediction - baseline_prediction
    n_steps = np.full(len(prediction), steps, dtype=np.int64)
    evaluations = len(numeric) * steps * n_targets
    pending = np.flatnonzero(~_meets(delta, change, settings))
    while len(pending) and steps < settings.max_steps:
        steps = min(steps * 2, settings.max_steps)
        rows = np.unique(pending // n_targets)
        entries = (rows[:, None] * n_targets + np.arange(n_targets)).reshape(-1)
        refined = attributor.attribute(numeric[rows], categorical[rows], steps, targets[rows])
        evaluations += len(rows) * steps * n_targets
        r_delta, r_error = _completeness(refined)
        chosen = refined.integrated_gradients if not settings.multiply_by_inputs else refined.attributions
        attributions[entries] = chosen
        delta[entries], error[entries], n_steps[entries] = r_delta, r_error, steps
        prediction[entries] = refined.prediction  # same rows; keeps delta consistent bit for bit
        log.debug("adaptive IG: %d of %d rows refined at %d steps", len(rows), len(numeric), steps)
        pending = entries[~_meets(r_delta, change[entries], settings)]
    converged = np.ones(len(prediction), dtype=bool)
    converged[pending] = False
    return RowAttributions(
        attributions=attributions,
        prediction=prediction,
        baseline_prediction=baseline_prediction,
        delta=delta,
        completeness_error=error,
        n_steps=n_steps,
        converged=converged,
        gradient_evaluations=evaluations,
        targets=targets,
    )
