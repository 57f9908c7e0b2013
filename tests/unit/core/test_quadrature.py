import numpy as np
import pytest

from ig_airflow.core.quadrature import (
    ADAPTIVE,
    EXACT_DEGREE,
    RULES,
    interval_errors,
    intervals_to_split,
    rule,
    trapezoid_weights,
)


@pytest.mark.parametrize("method", sorted(RULES))
@pytest.mark.parametrize("n", [2, 3, 8, 33])
def test_weights_sum_to_one_and_nodes_in_unit_interval(method: str, n: int) -> None:
    weights, alphas = rule(method, n)
    assert weights.sum() == pytest.approx(1.0, abs=1e-14)
    assert (alphas >= 0).all() and (alphas <= 1).all()
    assert len(weights) == len(alphas) == n


@pytest.mark.parametrize("method", sorted(RULES))
@pytest.mark.parametrize("n", [2, 5, 16])
def test_exact_on_polynomials_of_the_rules_degree(method: str, n: int) -> None:
    weights, alphas = rule(method, n)
    degree = EXACT_DEGREE[method](n)
    for k in range(degree + 1):
        assert np.dot(weights, alphas**k) == pytest.approx(1.0 / (k + 1), rel=1e-12), k
    if n <= 5:  # one degree higher is no longer exact (the degree claim is tight)
        assert abs(np.dot(weights, alphas ** (degree + 1)) - 1.0 / (degree + 2)) > 1e-9


def test_unknown_method_and_bad_steps() -> None:
    with pytest.raises(ValueError, match="unknown quadrature method 'simpson'"):
        rule("simpson", 4)
    with pytest.raises(ValueError, match="n_steps must be >= 1"):
        rule("gausslegendre", 0)


def test_trapezoid_weights_on_nested_points_and_padding() -> None:
    coarse = np.linspace(0.0, 1.0, 5)
    np.testing.assert_allclose(trapezoid_weights(coarse), rule("trapezoid", 5)[0], atol=1e-15)
    np.testing.assert_allclose(rule(ADAPTIVE, 9), rule("trapezoid", 9), atol=0)  # its first pass
    fine = np.sort(np.concatenate([coarse, [0.125, 0.625, 0.6875]]))
    weights = trapezoid_weights(np.concatenate([fine, [1.0, 1.0]]))  # padding repeats the last point
    assert weights[-2:].tolist() == [0.0, 0.0] and weights.sum() == pytest.approx(1.0, abs=1e-15)
    for k in range(2):  # exact for lines on any points
        assert np.dot(trapezoid_weights(fine), fine**k) == pytest.approx(1.0 / (k + 1), rel=1e-14)
    assert abs(np.dot(trapezoid_weights(fine), fine**2) - 1.0 / 3) > 1e-4


KINK = 0.3  # g(alpha) = step at KINK: the integrand of score(alpha) = relu(alpha - KINK)


def _kinked(alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (alphas > KINK).astype(float), np.maximum(alphas - KINK, 0.0)


def test_interval_errors_are_the_trapezoid_errors_and_find_the_kink() -> None:
    alphas = np.linspace(0.0, 1.0, 9)
    rates, scores = _kinked(alphas)
    errors = interval_errors(alphas, rates, scores)
    exact_error = np.dot(trapezoid_weights(alphas), rates) - (1 - KINK)
    assert errors.sum() == pytest.approx(exact_error, abs=1e-15) and abs(exact_error) > 1e-3
    kinked = np.flatnonzero((alphas[:-1] < KINK) & (alphas[1:] > KINK))
    assert np.flatnonzero(np.abs(errors) > 1e-15).tolist() == kinked.tolist()  # smooth elsewhere: exact
    split = intervals_to_split(errors[None, :], np.array([1e-3]), np.ones((1, 8), bool))
    assert np.flatnonzero(split[0]).tolist() == kinked.tolist()
    assert not intervals_to_split(errors[None, :], np.array([1.0]), np.ones((1, 8), bool)).any()


def test_refining_the_kink_keeps_every_point_and_shrinks_the_error() -> None:
    """Nesting: each refinement adds midpoints and keeps the points already evaluated; the
    error estimate (exact here) falls with the width of the interval that holds the kink."""
    alphas = np.linspace(0.0, 1.0, 5)
    bounds = []
    for _ in range(40):
        rates, scores = _kinked(alphas)
        errors = interval_errors(alphas, rates, scores)
        bounds.append(np.abs(errors).sum())
        split = intervals_to_split(errors[None, :], np.array([1e-6]), np.diff(alphas)[None, :] > 1e-9)[0]
        if not split.any():
            break
        assert split.sum() == 1
        refined = np.sort(np.concatenate([alphas, (alphas[:-1] + alphas[1:])[split] / 2]))
        assert np.isin(alphas, refined).all() and len(refined) == len(alphas) + split.sum()
        alphas = refined
    assert bounds[-1] <= 1e-6 < bounds[0]
    assert all(later <= earlier / 2 for earlier, later in zip(bounds[:-2], bounds[2:], strict=True))
    assert len(alphas) == 5 + len(bounds) - 1  # one point per halving of the kink's interval
    rates, _ = _kinked(alphas)
    assert abs(np.dot(trapezoid_weights(alphas), rates) - (1 - KINK)) <= 1e-6


def test_split_prediction_takes_the_largest_errors_until_the_excess_is_covered() -> None:
    errors = np.array([[0.5, -0.1, 0.05, -0.3, 0.0]])
    wide = np.ones((1, 5), bool)
    # excess 0.95 - 0.5 = 0.45: 0.5 alone covers it
    assert intervals_to_split(errors, np.array([0.5]), wide)[0].tolist() == [True, False, False, False, False]
    # excess 0.85: 0.5 + 0.3 = 0.8 is short, + 0.1 covers it
    assert intervals_to_split(errors, np.array([0.1]), wide)[0].tolist() == [True, True, False, True, False]
    narrow = wide.copy()
    narrow[0, 0] = False  # too narrow to split: the next ones take its place
    assert intervals_to_split(errors, np.array([0.5]), narrow)[0].tolist() == [False, True, True, True, False]
