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
    """Result for a block of rows; every array has one entry per row."""

    attributions: np.ndarray  # [B, F]
    prediction: np.ndarray
    baseline_prediction: np.ndarray
    delta: np.ndarray  # sum(attr) - (F(x) - F(x')) at the final step count
    completeness_error: np.ndarray  # |delta| / |F(x) - F(x')|
    n_steps: np.ndarray  # final step count per row
    converged: np.ndarray  # bool: met the tolerance (always True without a tolerance)
    gradient_evaluations: int  # interpolated rows evaluated (forward+backward), all passes


def _completeness(result: FixedStepResult, baseline_prediction: float) -> tuple[np.ndarray, np.ndarray]:
    change = result.prediction - baseline_prediction
    delta = result.attributions.sum(axis=1) - change
    return delta, np.abs(delta) / np.maximum(np.abs(change), 1e-12)


def _meets(delta: np.ndarray, change: np.ndarray, settings: IGSection) -> np.ndarray:
    if settings.tolerance is None:
        return np.ones(len(delta), dtype=bool)
    return np.abs(delta) <= settings.tolerance * np.abs(change) + settings.atol


def adaptive_attributions(
    attributor: Attributor, numeric: np.ndarray, categorical: np.ndarray, settings: IGSection
) -> RowAttributions:
    """Explain rows with ``settings.n_steps``, then refine rows above the tolerance."""
    n_rows = len(numeric)
    steps = settings.n_steps
    first = attributor.attribute(numeric, categorical, steps)
    output = first.integrated_gradients if not settings.multiply_by_inputs else first.attributions
    attributions = np.array(output, dtype=np.float64, copy=True)
    prediction = first.prediction.astype(np.float64)
    delta, error = _completeness(first, attributor.baseline_prediction)
    change = prediction - attributor.baseline_prediction
    n_steps = np.full(n_rows, steps, dtype=np.int64)
    evaluations = n_rows * steps
    pending = np.flatnonzero(~_meets(delta, change, settings))
    while len(pending) and steps < settings.max_steps:
        steps = min(steps * 2, settings.max_steps)
        refined = attributor.attribute(numeric[pending], categorical[pending], steps)
        evaluations += len(pending) * steps
        r_delta, r_error = _completeness(refined, attributor.baseline_prediction)
        chosen = refined.integrated_gradients if not settings.multiply_by_inputs else refined.attributions
        attributions[pending] = chosen
        delta[pending], error[pending], n_steps[pending] = r_delta, r_error, steps
        prediction[pending] = refined.prediction  # same rows; keeps delta consistent bit for bit
        still = ~_meets(r_delta, change[pending], settings)
        log.debug("adaptive IG: %d of %d rows refined at %d steps", len(pending), n_rows, steps)
        pending = pending[still]
    converged = np.ones(n_rows, dtype=bool)
    converged[pending] = False
    return RowAttributions(
        attributions=attributions,
        prediction=prediction,
        baseline_prediction=np.full(n_rows, attributor.baseline_prediction),
        delta=delta,
        completeness_error=error,
        n_steps=n_steps,
        converged=converged,
        gradient_evaluations=evaluations,
    )
