"""Vectorised Integrated Gradients, written once for every framework.

The interpolated rows of many examples and steps go through one forward and one backward per
chunk (gradients with respect to the interpolated inputs only), weighted by a quadrature rule
whose weights sum to 1. Categorical features are attributed at their embedding layers: the
looked-up vectors of the input and of the baseline are interpolated and substituted for the
layers' outputs (every embedding in the same pass), then summed over the embedding dimension.
A hidden layer is attributed the same way in its activation space, one score per unit
(Captum's ``LayerIntegratedGradients``, alibi's ``layer=``).

The framework enters only through a :class:`~ig_airflow.core.backend.ModelAdapter` (calling the
model, capturing and substituting layers) and its :class:`~ig_airflow.core.backend.TensorOps`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ig_airflow.config import IGSection
from ig_airflow.core.backend import FixedStepResult, ModelAdapter, TensorOps
from ig_airflow.core.baselines import Baseline
from ig_airflow.core.chunking import row_chunks, rows_within_budget
from ig_airflow.core.quadrature import rule
from ig_airflow.exceptions import ConfigError

PROBE_ROWS = 4  # baseline rows of the probe forward that measures memory per row


def integrate_paths(
    ops: TensorOps,
    values: Sequence[Any],
    bases: Sequence[Any],
    n_steps: int,
    method: str,
    interpolated_rows: int,
    output_on_path: Callable[[list[Any], slice], Any],
) -> list[np.ndarray]:
    """Integrated gradients of ``output_on_path(path, rows)`` along the straight paths from
    ``bases`` to ``values`` (each ``[rows, *shape]``), chunk by chunk; float64 arrays."""
    weights_np, alphas_np = rule(method, n_steps)
    weights, alphas = ops.constant(weights_np), ops.constant(alphas_np)
    parts: list[list[Any]] = [[] for _ in values]
    for rows in row_chunks(len(values[0]), n_steps, interpolated_rows):
        path = [ops.interpolate(base, value[rows], alphas) for value, base in zip(values, bases, strict=True)]
        grads = ops.gradients(lambda points, rows=rows: output_on_path(points, rows), path)
        for part, grad in zip(parts, grads, strict=True):
            part.append(ops.integrate(grad, weights, rows.stop - rows.start))
    if not parts[0]:
        return [np.zeros((0, *tuple(value.shape[1:]))) for value in values]
    return [ops.numpy(ops.concat(part)) for part in parts]


def combine(
    ops: TensorOps,
    integrals: Sequence[np.ndarray],
    values: Sequence[Any],
    bases: Sequence[Any],
    summed: Sequence[bool],
    prediction: Any,
) -> FixedStepResult:
    """Attributions ``IG * (x - x')`` per column: each block flattened per row, summed to one
    column where ``summed`` says so (an embedding's dimensions)."""
    attributions, raw = [], []
    for ig, value, base, total in zip(integrals, values, bases, summed, strict=True):
        rows = len(ig)
        flat = ig.reshape(rows, -1)
        diff = ops.numpy(value - base).reshape(rows, -1)
        attributions.append((flat * diff).sum(1, keepdims=True) if total else flat * diff)
        raw.append(flat.sum(1, keepdims=True) if total else flat)
    return FixedStepResult(
        attributions=np.concatenate(attributions, 1),
        integrated_gradients=np.concatenate(raw, 1),
        prediction=ops.numpy(prediction).reshape(-1),
    )


class InputAttributor:
    """IG for a model against one baseline row: numeric inputs and embedding layers.

    Args:
        adapter: the backend's model adapter (tensors, calls, layer hooks, tensor ops).
        baseline: resolved baseline row.
        settings: the run's ``ig`` section (method, internal batch size, memory budget).
    """

    def __init__(self, adapter: ModelAdapter, baseline: Baseline, settings: IGSection):
        self.adapter = adapter
        self.ops = adapter.ops
        self.settings = settings
        self.layers = adapter.embedding_layers
        self.base_num, self.base_cat = adapter.tensors(
            baseline.numeric[None, :], baseline.categorical[None, :]
        )
        self.base_embeddings, prediction = self.embed(self.base_num, self.base_cat)
        self.baseline_prediction = float(self.ops.numpy(prediction)[0])
        self.internal_batch_size = settings.internal_batch_size or rows_within_budget(
            settings.memory_budget_mb,
            adapter.bytes_per_interpolated_row(
                *adapter.tensors(
                    np.repeat(baseline.numeric[None, :], PROBE_ROWS, 0),
                    np.repeat(baseline.categorical[None, :], PROBE_ROWS, 0),
                )
            ),
        )

    def embed(self, x_num: Any, x_cat: Any) -> tuple[list[Any], Any]:
        """The embedding layers' outputs and the prediction for these rows."""
        with self.adapter.inference(), self.adapter.capture(self.layers) as captured:
            prediction = self.adapter(x_num, x_cat)
        return list(captured), prediction

    def layer(self, name: str) -> LayerAttributor:
        """An attributor for the units of the hidden layer ``name``."""
        return LayerAttributor(self, name)

    def attribute(self, numeric: np.ndarray, categorical: np.ndarray, n_steps: int) -> FixedStepResult:
        x_num, x_cat = self.adapter.tensors(numeric, categorical)
        embeddings, prediction = self.embed(x_num, x_cat)
        values, bases = [x_num, *embeddings], [self.base_num, *self.base_embeddings]
        integrals = self.input_integrals(values, bases, x_cat, n_steps)
        return combine(self.ops, integrals, values, bases, [False] + [True] * len(embeddings), prediction)

    def input_integrals(
        self, values: list[Any], bases: list[Any], x_cat: Any, n_steps: int
    ) -> list[np.ndarray]:
        """IG of the numeric inputs and the embedding outputs (vectorised)."""

        def output(path: list[Any], rows: slice) -> Any:
            with self.adapter.substitute(self.layers, path[1:]):
                return self.adapter(path[0], self.ops.repeat(x_cat[rows], n_steps))

        return integrate_paths(
            self.ops, values, bases, n_steps, self.settings.method, self.internal_batch_size, output
        )

    def layer_integrals(
        self, layer: LayerAttributor, x_num: Any, x_cat: Any, activation: Any, n_steps: int
    ) -> np.ndarray:
        """IG in the activation space of ``layer`` (vectorised)."""

        def output(path: list[Any], rows: slice) -> Any:
            with self.adapter.substitute([layer.layer], path):
                return self.adapter(
                    self.ops.repeat(x_num[rows], n_steps), self.ops.repeat(x_cat[rows], n_steps)
                )

        return integrate_paths(
            self.ops,
            [activation],
            [layer.base],
            n_steps,
            self.settings.method,
            self.internal_batch_size,
            output,
        )[0]


class LayerAttributor:
    """IG in the activation space of one hidden layer: its output is interpolated from its value
    at the baseline row to its value at the input row and substituted, every other input keeps
    its actual value; one attribution per unit of the layer's output (flattened).

    Args:
        parent: the input-level attributor (model adapter, baseline, settings, chunk size).
        name: the layer's name, e.g. ``mlp.1`` (PyTorch) or ``dense_0`` (Keras).
    """

    def __init__(self, parent: InputAttributor, name: str):
        self.parent = parent
        self.name = name
        adapter = parent.adapter
        self.layer = adapter.layer(name)
        with adapter.inference(), adapter.capture([self.layer]) as captured:
            adapter(parent.base_num, parent.base_cat)
        if not hasattr(captured[0], "shape"):
            raise ConfigError(f"ig.layer_attributions: layer {name!r} does not return one tensor")
        self.base = captured[0]
        self.units = int(np.prod(self.base.shape[1:]))
        self.baseline_prediction = parent.baseline_prediction

    def attribute(self, numeric: np.ndarray, categorical: np.ndarray, n_steps: int) -> FixedStepResult:
        adapter = self.parent.adapter
        x_num, x_cat = adapter.tensors(numeric, categorical)
        with adapter.inference(), adapter.capture([self.layer]) as captured:
            prediction = adapter(x_num, x_cat)
        activation = captured[0]
        integral = self.parent.layer_integrals(self, x_num, x_cat, activation, n_steps)
        return combine(self.parent.ops, [integral], [activation], [self.base], [False], prediction)
