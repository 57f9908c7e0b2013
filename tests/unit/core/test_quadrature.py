import numpy as np
import pytest

from ig_airflow.core.quadrature import EXACT_DEGREE, RULES, rule


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
