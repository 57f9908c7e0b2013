"""The default ``adaptive_trapezoid`` scheme on the trained demo model: the tolerance with far
fewer gradient evaluations than the former Gauss-Legendre doubling, every evaluation reused,
rows whose prediction barely moved reported apart from rows that did not converge, and
attributions that agree with a high-step Gauss-Legendre reference."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ig_airflow.artifacts import load_artifact
from ig_airflow.config import IGSection
from ig_airflow.core.adaptive import RowAttributions, adaptive_attributions
from ig_airflow.core.baselines import resolve_baseline
from ig_airflow.core.encoding import encode_rows
from ig_airflow.run.manifest import CompletenessStats

FORMER_DEFAULT = {"method": "gausslegendre", "n_steps": 32, "max_steps": 512, "atol": 1e-6}


@pytest.fixture(scope="module")
def parts(demo: dict[str, str], demo_frames: Any) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    artifact = load_artifact(demo["artifact"])
    baseline = resolve_baseline(artifact.metadata.inputs, artifact.metadata.baseline, demo["train"])
    numeric, categorical = encode_rows(demo_frames[1].sample(400, random_state=3), artifact.metadata.inputs)
    return artifact, baseline, numeric, categorical


def explain(parts: tuple[Any, Any, np.ndarray, np.ndarray], **settings: Any) -> RowAttributions:
    artifact, baseline, numeric, categorical = parts
    ig = IGSection(**settings)
    attributor = artifact.backend.attributor(artifact.model, artifact.metadata, baseline, ig)
    return adaptive_attributions(attributor, numeric, categorical, ig)


def change(result: RowAttributions) -> np.ndarray:
    return result.prediction - result.baseline_prediction


def test_default_meets_the_tolerance_with_a_third_of_the_former_evaluations(parts) -> None:
    assert (IGSection().method, IGSection().n_steps, IGSection().atol) == ("adaptive_trapezoid", 9, 1e-4)
    new, former = explain(parts), explain(parts, **FORMER_DEFAULT)
    rows = len(new.prediction)
    within = np.abs(new.delta) <= 0.01 * np.abs(change(new))
    assert within.mean() >= 0.985 and new.converged.all()  # 99.25% here; >= 99% of 4,000 in the benchmark
    assert new.gradient_evaluations / rows <= 32
    assert new.gradient_evaluations <= former.gradient_evaluations / 3
    assert new.n_steps.sum() == new.gradient_evaluations and new.n_steps.min() == 9
    assert (new.n_steps > 9).mean() > 0.5  # most rows are refined, each as far as it needs
    np.testing.assert_allclose(
        new.attributions.sum(axis=1) - change(new), new.delta, atol=1e-12
    )  # delta is what the attributions add up to


def test_refinement_keeps_the_first_pass(parts) -> None:
    """A row left at the first pass has the fixed trapezoid rule's attributions; refined rows
    add points to them (the first pass is never thrown away: n_steps counts every point)."""
    first = explain(parts, dtype="float64", tolerance=None)
    fixed = explain(parts, dtype="float64", method="trapezoid", n_steps=9, tolerance=None)
    np.testing.assert_allclose(first.attributions, fixed.attributions, atol=1e-12)
    assert (first.n_steps == 9).all() and first.gradient_evaluations == 9 * len(first.n_steps)
    adaptive = explain(parts, dtype="float64", tolerance=0.05)
    kept = adaptive.n_steps == 9
    assert 0.1 < kept.mean() < 0.9
    np.testing.assert_array_equal(adaptive.attributions[kept], first.attributions[kept])
    assert adaptive.completeness_error[~kept].max() < first.completeness_error[~kept].max() / 10


def test_attributions_agree_with_a_high_step_gauss_legendre_reference(parts) -> None:
    exact = {"method": "gausslegendre", "n_steps": 2048, "max_steps": 2048, "tolerance": None}
    reference = explain(parts, dtype="float64", **exact)
    new, former = explain(parts, dtype="float64"), explain(parts, dtype="float64", **FORMER_DEFAULT)
    tolerance = 0.01 * np.abs(change(reference)) + 1e-4
    np.testing.assert_allclose(new.prediction, reference.prediction, atol=1e-12)
    error = np.abs(new.attributions - reference.attributions).max(axis=1)  # the worst feature
    former_error = np.abs(former.attributions - reference.attributions).max(axis=1)
    assert np.mean(error <= tolerance) >= 0.95
    assert np.mean(error <= tolerance) >= np.mean(former_error <= tolerance)
    assert np.mean(error <= 2 * tolerance) >= 0.99


def test_barely_moved_rows_are_reported_apart_from_unconverged_ones(parts) -> None:
    """First pass only (max_steps = n_steps) with a coarse atol: a row above the relative
    tolerance but within atol barely moved; one above both did not converge."""
    result = explain(parts, dtype="float64", max_steps=9, atol=2e-3)
    moved = np.abs(change(result))
    error = np.abs(result.delta)
    relative = error <= 0.01 * moved
    assert result.barely_moved is not None
    np.testing.assert_array_equal(result.converged, error <= 0.01 * moved + 2e-3)
    np.testing.assert_array_equal(result.barely_moved, result.converged & ~relative)
    barely, unconverged = result.barely_moved, ~result.converged
    assert barely.sum() > 0 and unconverged.sum() > 0
    assert np.median(moved[barely]) < np.median(moved[unconverged])  # barely moved: a small change
    stats = CompletenessStats()
    stats.add(result)
    summary = stats.summary()
    assert (summary["unconverged_rows"], summary["barely_moved_rows"]) == (unconverged.sum(), barely.sum())
    assert not explain(parts, tolerance=None, max_steps=9).barely_moved.any()


def test_integrated_gradients_without_inputs_and_chunking(parts) -> None:
    """``multiply_by_inputs: false`` integrates the gradient on the same points; the chunk size
    changes nothing."""
    artifact, _, numeric, _ = parts
    big = explain(parts, dtype="float64")
    small = explain(parts, dtype="float64", internal_batch_size=37)
    np.testing.assert_allclose(big.attributions, small.attributions, atol=1e-12)
    raw = explain(parts, dtype="float64", multiply_by_inputs=False)
    np.testing.assert_array_equal(raw.n_steps, big.n_steps)
    np.testing.assert_allclose(raw.delta, big.delta, atol=1e-12)
    n_numeric = len(artifact.metadata.inputs.numeric)
    base = parts[1].numeric
    np.testing.assert_allclose(
        raw.attributions[:, :n_numeric] * (numeric - base), big.attributions[:, :n_numeric], atol=1e-10
    )
