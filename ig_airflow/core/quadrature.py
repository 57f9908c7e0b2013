"""Quadrature rules on [0, 1] for the Integrated Gradients path integral.

Each fixed rule returns ``(weights, alphas)``: ``n`` interpolation points ``alphas`` in [0, 1]
and weights that sum to exactly 1, so that ``sum_k w_k * g(alpha_k)`` approximates
``integral_0^1 g``. Captum's ``riemann_trapezoid`` weights sum to (n-1)/n, biasing every
attribution by -1/n; the trapezoid rule here is the textbook one.

``adaptive_trapezoid`` (the default) is the composite trapezoid rule on nested node sets that
differ from row to row: it starts from ``n`` equally spaced nodes and splits, row by row, the
intervals whose error is largest (:func:`intervals_to_split`), keeping every node already
evaluated. Its error estimate is exact for the sum over features: along the path the
integrand summed over features is ``d score / d alpha``, so its integral over an interval
``[a, b]`` is the change of the score there, ``score(b) - score(a)``, which the forward pass
of every gradient evaluation returns for free (:func:`interval_errors`). A ReLU network's
integrand jumps wherever a unit switches along the path (about 25 kinks per row on the demo
model), so high-order rules gain little; splitting the intervals that hold the large jumps does.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Rule = Callable[[int], tuple[np.ndarray, np.ndarray]]
ADAPTIVE = "adaptive_trapezoid"


def gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre: exact for polynomials of degree 2n-1."""
    nodes, weights = np.polynomial.legendre.leggauss(n)
    return weights / 2.0, (nodes + 1.0) / 2.0


def riemann_left(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full(n, 1.0 / n), np.arange(n) / n


def riemann_right(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full(n, 1.0 / n), np.arange(1, n + 1) / n


def riemann_middle(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full(n, 1.0 / n), (np.arange(n) + 0.5) / n


def trapezoid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Composite trapezoid on n equally spaced nodes including both ends (n >= 2)."""
    if n < 2:
        raise ValueError("trapezoid needs n_steps >= 2")
    weights = np.full(n, 1.0 / (n - 1))
    weights[[0, -1]] /= 2.0
    return weights, np.linspace(0.0, 1.0, n)


RULES: dict[str, Rule] = {
    ADAPTIVE: trapezoid,  # at a fixed step count: its first pass
    "gausslegendre": gauss_legendre,
    "riemann_left": riemann_left,
    "riemann_right": riemann_right,
    "riemann_middle": riemann_middle,
    "trapezoid": trapezoid,
}

# Polynomial degree each rule integrates exactly with n nodes.
EXACT_DEGREE: dict[str, Callable[[int], int]] = {
    ADAPTIVE: lambda n: 1,
    "gausslegendre": lambda n: 2 * n - 1,
    "riemann_left": lambda n: 0,
    "riemann_right": lambda n: 0,
    "riemann_middle": lambda n: 1,
    "trapezoid": lambda n: 1,
}


def rule(method: str, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(weights, alphas)`` of quadrature ``method`` with ``n_steps`` nodes."""
    if method not in RULES:
        raise ValueError(f"unknown quadrature method {method!r}; choose one of {sorted(RULES)}")
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    weights, alphas = RULES[method](n_steps)
    return weights.astype(np.float64), alphas.astype(np.float64)


def trapezoid_weights(alphas: np.ndarray) -> np.ndarray:
    """Weights of the composite trapezoid rule on sorted nodes ``alphas`` (``[..., n]`` from 0 to
    1): half of each neighbouring interval; a repeated node (padding) adds nothing."""
    widths = np.diff(alphas, axis=-1)
    weights = np.zeros(alphas.shape, dtype=np.float64)
    weights[..., :-1] += widths / 2.0
    weights[..., 1:] += widths / 2.0
    return weights


def interval_errors(alphas: np.ndarray, rates: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Signed error of the trapezoid rule on each interval between neighbouring nodes, for the
    integrand summed over features: ``rates`` (``d score / d alpha``) and ``scores`` at the
    sorted nodes ``alphas`` (``[..., n]``; ``rates`` and ``scores`` may carry more leading axes,
    e.g. targets, ``alphas`` broadcasts). The exact integral is the change of the score; ``[..., n-1]``."""
    widths = np.diff(alphas, axis=-1)
    return widths * (rates[..., 1:] + rates[..., :-1]) / 2.0 - np.diff(scores, axis=-1)


def intervals_to_split(errors: np.ndarray, tolerance: np.ndarray, splittable: np.ndarray) -> np.ndarray:
    """Which intervals to split so that ``sum |errors|`` may fall to ``tolerance``, predicted from
    the errors themselves: largest first, the fewest whose errors add up to the excess (as if a
    split removed its interval's error; halving a jump's interval halves its error on average,
    so the next round takes what is left). ``errors`` ``[rows, intervals]``, ``tolerance``
    ``[rows]``, ``splittable`` (wide enough) ``[rows, intervals]``; a bool mask like ``errors``."""
    size = np.where(splittable, np.abs(errors), 0.0)
    excess = np.abs(errors).sum(axis=-1) - tolerance
    order = np.argsort(-size, axis=-1, kind="stable")
    ranked = np.take_along_axis(size, order, axis=-1)
    before = np.cumsum(ranked, axis=-1) - ranked
    chosen = (before < excess[:, None]) & (ranked > 0)
    mask = np.zeros(size.shape, dtype=bool)
    np.put_along_axis(mask, order, chosen, axis=-1)
    return mask
