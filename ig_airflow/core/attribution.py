"""Vectorised Integrated Gradients, written once for every framework.

The interpolated rows of many examples and steps go through one forward and one backward per
chunk (gradients with respect to the interpolated inputs only), weighted by a quadrature rule
whose weights sum to 1. Categorical features are attributed at their embedding layers: the
looked-up vectors of the input and of the baseline are interpolated and substituted for the
layers' outputs (every embedding in the same pass), then summed over the embedding dimension.
Every target output of a row (a list, ``predicted``, ``top_k``) is explained from the same
forward pass: one backward per target on the shared graph. A hidden layer is attributed the
same way in its activation space, one score per unit (Captum's ``LayerIntegratedGradients``,
alibi's ``layer=``).

The framework enters only through a :class:`~ig_airflow.core.backend.ModelAdapter` (calling the
model, capturing and substituting layers) and its :class:`~ig_airflow.core.backend.TensorOps`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ig_airflow.config import IGSection
from ig_airflow.core.backend import FixedStepResult, ModelAdapter, TensorOps
from ig_airflow.core.baselines import Baseline
from ig_airflow.core.calling import fold_dense, model_arrays
from ig_airflow.core.chunking import row_chunks, rows_within_budget
from ig_airflow.core.outputs import is_per_target, target_columns, target_setting
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
    """Integrated gradients of each target column of ``output_on_path(path, rows)`` (``[points,
    n_targets]``) along the straight paths from ``bases`` to ``values`` (each ``[rows, *shape]``),
    chunk by chunk, every target from the same forward pass; float64 ``[rows, n_targets, *shape]``."""
    weights_np, alphas_np = rule(method, n_steps)
    weights, alphas = ops.constant(weights_np), ops.constant(alphas_np)
    parts: list[list[list[Any]]] = [[] for _ in values]  # input -> chunk -> target
    for rows in row_chunks(len(values[0]), n_steps, interpolated_rows):
        path = [ops.interpolate(base, value[rows], alphas) for value, base in zip(values, bases, strict=True)]
        per_target = ops.gradients(lambda points, rows=rows: output_on_path(points, rows), path)
        for i, part in enumerate(parts):
            part.append([ops.integrate(grads[i], weights, rows.stop - rows.start) for grads in per_target])
    if not parts[0]:
        return [np.zeros((0, 1, *tuple(value.shape[1:]))) for value in values]
    return [
        np.stack(
            [np.concatenate([ops.numpy(chunk[t]) for chunk in part]) for t in range(len(part[0]))], axis=1
        )
        for part in parts
    ]


def combine(
    ops: TensorOps,
    integrals: Sequence[np.ndarray],
    values: Sequence[Any],
    bases: Sequence[Any],
    summed: Sequence[bool],
    scores: TargetScores,
    fold: Callable[[np.ndarray, bool], np.ndarray] | None = None,
) -> FixedStepResult:
    """Attributions ``IG * (x - x')`` per column and per (row, target), rows major: each block
    flattened per row, summed to one column where ``summed`` says so (an embedding's
    dimensions), then ``fold`` maps model columns to features (dense one-hot blocks)."""
    attributions, raw = [], []
    n_targets = scores.targets.shape[1]
    for ig, value, base, total in zip(integrals, values, bases, summed, strict=True):
        rows = len(ig)
        flat = ig.reshape(rows * n_targets, -1)
        diff = np.repeat(ops.numpy(value - base).reshape(rows, -1), n_targets, axis=0)
        attributions.append((flat * diff).sum(1, keepdims=True) if total else flat * diff)
        raw.append(flat.sum(1, keepdims=True) if total else flat)
    attr, grads = np.concatenate(attributions, 1), np.concatenate(raw, 1)
    if fold is not None:
        attr, grads = fold(attr, False), fold(grads, True)
    return FixedStepResult(
        attributions=attr,
        integrated_gradients=grads,
        prediction=scores.at_input.reshape(-1),
        baseline_prediction=scores.at_baseline.reshape(-1),
        targets=scores.targets,
    )


@dataclass
class TargetScores:
    """The explained scores of a block of rows: target columns ``[rows, n_targets]``, the
    calibrated score of each at the input and at the baseline."""

    targets: np.ndarray
    at_input: np.ndarray
    at_baseline: np.ndarray


class InputAttributor:
    """IG for a model against one baseline row: numeric inputs and embedding layers, for every
    target output of each row in one pass.

    Args:
        adapter: the backend's model adapter (tensors, calls, layer hooks, tensor ops).
        baseline: resolved baseline row.
        settings: the run's ``ig`` section (method, internal batch size, memory budget, target).
    """

    def __init__(self, adapter: ModelAdapter, baseline: Baseline, settings: IGSection):
        self.adapter = adapter
        self.ops = adapter.ops
        self.settings = settings
        self.spec = adapter.metadata.inputs
        self.output = adapter.metadata.output
        self.target = target_setting(self.output, settings.target)
        self.layers = adapter.embedding_layers
        self.base_num, self.base_cat = self.tensors(baseline.numeric[None, :], baseline.categorical[None, :])
        self.base_embeddings, scores = self.embed(self.base_num, self.base_cat)
        self.baseline_scores = self.ops.numpy(scores)[0]
        target_columns(self.target, self.output, self.baseline_scores[None, :])  # a bad target fails here
        self.internal_batch_size = settings.internal_batch_size or rows_within_budget(
            settings.memory_budget_mb,
            adapter.bytes_per_interpolated_row(
                *self.tensors(
                    np.repeat(baseline.numeric[None, :], PROBE_ROWS, 0),
                    np.repeat(baseline.categorical[None, :], PROBE_ROWS, 0),
                )
            ),
        )

    def tensors(self, numeric: np.ndarray, categorical: np.ndarray) -> tuple[Any, Any]:
        """Encoded rows as the model's float and index tensors (scaled; dense one-hot)."""
        return self.adapter.tensors(*model_arrays(self.spec, numeric, categorical))

    def fold(self, block: np.ndarray, per_unit: bool) -> np.ndarray:
        return fold_dense(self.spec, block, per_unit)

    @property
    def baseline_prediction(self) -> float:
        """The baseline's score at the single configured target (NaN when targets vary by row)."""
        if is_per_target(self.target):
            return float("nan")
        column = target_columns(self.target, self.output, self.baseline_scores[None, :])[0, 0]
        return float(self.baseline_scores[column])

    def scores(self, scores: Any, targets: np.ndarray | None) -> TargetScores:
        """Target columns (resolved from the rows' scores unless given) and their scores."""
        matrix = self.ops.numpy(scores)
        if targets is None:
            targets = target_columns(self.target, self.output, matrix)
        return TargetScores(
            targets=targets,
            at_input=np.take_along_axis(matrix, targets, axis=1),
            at_baseline=self.baseline_scores[targets],
        )

    def on_path(self, scores: Any, targets: np.ndarray, rows: slice, n_steps: int) -> Any:
        """The target columns of the scores on the path points of ``rows``."""
        return self.ops.take(scores, np.repeat(targets[rows], n_steps, axis=0))

    def embed(self, x_num: Any, x_cat: Any) -> tuple[list[Any], Any]:
        """The embedding layers' outputs and the calibrated scores for these rows."""
        with self.adapter.inference(), self.adapter.capture(self.layers) as captured:
            scores = self.adapter(x_num, x_cat)
        return list(captured), scores

    def layer(self, name: str) -> LayerAttributor:
        """An attributor for the units of the hidden layer ``name``."""
        return LayerAttributor(self, name)

    def attribute(
        self, numeric: np.ndarray, categorical: np.ndarray, n_steps: int, targets: np.ndarray | None = None
    ) -> FixedStepResult:
        x_num, x_cat = self.tensors(numeric, categorical)
        embeddings, scores = self.embed(x_num, x_cat)
        explained = self.scores(scores, targets)
        values, bases = [x_num, *embeddings], [self.base_num, *self.base_embeddings]
        integrals = self.input_integrals(values, bases, x_cat, n_steps, explained.targets)
        summed = [False] + [True] * len(embeddings)
        return combine(self.ops, integrals, values, bases, summed, explained, self.fold)

    def input_integrals(
        self, values: list[Any], bases: list[Any], x_cat: Any, n_steps: int, targets: np.ndarray
    ) -> list[np.ndarray]:
        """IG of the numeric inputs and the embedding outputs (vectorised), per target."""

        def output(path: list[Any], rows: slice) -> Any:
            with self.adapter.substitute(self.layers, path[1:]):
                scores = self.adapter(path[0], self.ops.repeat(x_cat[rows], n_steps))
            return self.on_path(scores, targets, rows, n_steps)

        return integrate_paths(
            self.ops, values, bases, n_steps, self.settings.method, self.internal_batch_size, output
        )

    def layer_integrals(
        self,
        layer: LayerAttributor,
        x_num: Any,
        x_cat: Any,
        activation: Any,
        n_steps: int,
        targets: np.ndarray,
    ) -> np.ndarray:
        """IG in the activation space of ``layer`` (vectorised), per target."""

        def output(path: list[Any], rows: slice) -> Any:
            with self.adapter.substitute([layer.layer], path):
                scores = self.adapter(
                    self.ops.repeat(x_num[rows], n_steps), self.ops.repeat(x_cat[rows], n_steps)
                )
            return self.on_path(scores, targets, rows, n_steps)

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

    @property
    def baseline_prediction(self) -> float:
        return self.parent.baseline_prediction

    def attribute(
        self, numeric: np.ndarray, categorical: np.ndarray, n_steps: int, targets: np.ndarray | None = None
    ) -> FixedStepResult:
        adapter = self.parent.adapter
        x_num, x_cat = self.parent.tensors(numeric, categorical)
        with adapter.inference(), adapter.capture([self.layer]) as captured:
            scores = adapter(x_num, x_cat)
        explained = self.parent.scores(scores, targets)
        activation = captured[0]
        integral = self.parent.layer_integrals(self, x_num, x_cat, activation, n_steps, explained.targets)
        return combine(self.parent.ops, [integral], [activation], [self.base], [False], explained)
