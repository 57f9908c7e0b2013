"""Quadrature rules on [0, 1] for the Integrated Gradients path integral.

Each rule returns ``(weights, alphas)``: ``n`` interpolation points ``alphas`` in [0, 1] and
weights that sum to exactly 1, so that ``sum_k w_k * g(alpha_k)`` approximates
``integral_0^1 g``. Captum's ``riemann_trapezoid`` weights sum to (n-1)/n, biasing every
attribution by -1/n; the trapezoid rule here is the textbook one.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Rule = Callable[[int], tuple[np.ndarray, np.ndarray]]


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
    "gausslegendre": gauss_legendre,
    "riemann_left": riemann_left,
    "riemann_right": riemann_right,
    "riemann_middle": riemann_middle,
    "trapezoid": trapezoid,
}

# Polynomial degree each rule integrates exactly with n nodes.
EXACT_DEGREE: dict[str, Callable[[int], int]] = {
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
