"""Vectorised Integrated Gradients, written once for every framework.

The interpolated rows of many examples and steps go through one forward and one backward per
chunk (gradients with respect to the interpolated inputs only), weighted by a quadrature rule
whose weights sum to 1. Categorical features are attributed at their embedding layers: the
looked-up vectors of the input and of the baseline are interpolated and substituted for the
layers' outputs (every embedding in the same pass), then summed over the embedding dimension.
Every target output of a row (a list, ``predicted``, ``top_k``) is explained from the same
forward pass: one backward per target on the shared graph. A hidden layer is attributed the
same way in its activation space, one score per unit (Captum's ``LayerIntegratedGradients``,
alibi's ``layer=``). ``path_gradients`` returns the integrand itself at each row's own points
(and the score there) for rules that place points row by row (:mod:`ig_airflow.core.adaptive`).

The framework enters only through a :class:`~ig_airflow.core.backend.ModelAdapter` (calling the
model, capturing and substituting layers) and its :class:`~ig_airflow.core.backend.TensorOps`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ig_airflow.config import IGSection
from ig_airflow.core.backend import FixedStepResult, ModelAdapter, PathGradients, TensorOps
from ig_airflow.core.baselines import Baseline
from ig_airflow.core.calling import fold_dense, model_arrays
from ig_airflow.core.chunking import row_chunks, rows_within_budget
from ig_airflow.core.outputs import is_per_target, target_columns, target_setting
from ig_airflow.core.quadrature import rule
from ig_airflow.exceptions import ConfigError

PROBE_ROWS = 4  # baseline rows of the probe forward that measures memory per row
PathRun = Callable[[slice, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
RowBaselines = tuple[np.ndarray, np.ndarray]  # one encoded baseline row per row: numeric, categorical


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
        path = [
            ops.interpolate(rows_of(base, rows), value[rows], alphas)
            for value, base in zip(values, bases, strict=True)
        ]
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


def rows_of(base: Any, rows: slice) -> Any:
    """The baselines of ``rows``: one baseline row (``[1, *shape]``) broadcasts as it is, a
    baseline per row (``[R, *shape]``, Expected Gradients) is sliced."""
    return base if base.shape[0] == 1 else base[rows]


def path_points(ops: TensorOps, value: Any, base: Any, alphas: np.ndarray) -> Any:
    """``base + alpha * (value - base)`` for rows ``[r, *shape]`` (``base``: ``[1, *shape]`` or one
    per row), each with its own ``alphas`` (``[r, n]``): ``[r * n, *shape]`` path points, rows major."""
    rows, n = alphas.shape
    shape = tuple(value.shape[1:])
    weights = ops.constant(
        np.ascontiguousarray(alphas, dtype=np.float64).reshape(rows, n, *(1,) * len(shape))
    )
    path = ops.reshape(base, (int(base.shape[0]), 1, *shape)) + weights * ops.reshape(
        value - base, (rows, 1, *shape)
    )
    return ops.reshape(path, (rows * n, *shape))


def path_gradients(
    ops: TensorOps,
    values: Sequence[Any],
    bases: Sequence[Any],
    summed: Sequence[bool],
    alphas: np.ndarray,
    interpolated_rows: int,
    output_on_path: Callable[[list[Any], slice], Any],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The integrand of every target at each row's own path points ``alphas`` (``[rows, n]``),
    chunk by chunk: the gradient of each model column times ``(x - x')`` and the gradient alone
    (both summed over an embedding's dimensions where ``summed``; ``[rows, targets, n,
    columns]``), and the target's score at each point (``[rows, targets, n]``)."""
    n = alphas.shape[1]
    diffs = [ops.numpy(v - b).reshape(len(alphas), 1, -1) for v, b in zip(values, bases, strict=True)]
    chunks = []
    for rows in row_chunks(len(alphas), n, interpolated_rows):
        path = [
            path_points(ops, v[rows], rows_of(b, rows), alphas[rows])
            for v, b in zip(values, bases, strict=True)
        ]
        outputs: list[Any] = []
        per_target = ops.gradients(_recording(output_on_path, rows, outputs), path)
        r = rows.stop - rows.start
        parts = [
            [
                _on_columns(ops.numpy(g).reshape(r, n, -1), d[rows], s)
                for g, d, s in zip(grads, diffs, summed, strict=True)
            ]
            for grads in per_target
        ]
        chunks.append(
            (
                np.stack([np.concatenate([p[0] for p in target], -1) for target in parts], 1),
                np.stack([np.concatenate([p[1] for p in target], -1) for target in parts], 1),
                ops.numpy(outputs[0]).reshape(r, n, -1).transpose(0, 2, 1),
            )
        )
    if not chunks:
        return np.zeros((0, 1, n, 0)), np.zeros((0, 1, n, 0)), np.zeros((0, 1, n))
    densities, gradients, scores = zip(*chunks, strict=True)
    return np.concatenate(densities), np.concatenate(gradients), np.concatenate(scores)


def _recording(
    output_on_path: Callable[[list[Any], slice], Any], rows: slice, outputs: list[Any]
) -> Callable[[list[Any]], Any]:
    """``output_on_path`` for ``rows``, keeping each output (the scores at the points) in ``outputs``."""

    def output(points: list[Any]) -> Any:
        outputs.append(output_on_path(points, rows))
        return outputs[-1]

    return output


def _on_columns(gradient: np.ndarray, diff: np.ndarray, total: bool) -> tuple[np.ndarray, np.ndarray]:
    """``gradient x diff`` and ``gradient`` (``[r, n, D]``), summed over D when ``total``."""
    density = gradient * diff
    if total:
        return density.sum(-1, keepdims=True), gradient.sum(-1, keepdims=True)
    return density, gradient


def point_order(alphas: np.ndarray) -> np.ndarray:
    """The rows sorted by how many points they have (NaN pads a row's unused points)."""
    return np.argsort(np.isfinite(alphas).sum(axis=1), kind="stable")


def grouped_path_gradients(
    alphas: np.ndarray, shape: tuple[int, int], run: PathRun
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`path_gradients` of rows sorted by their number of points (:func:`point_order`):
    ``run(rows, points)`` once per slice of rows with the same count; zeros at padded points.
    ``shape``: (targets, model columns)."""
    counts = np.isfinite(alphas).sum(axis=1)
    rows, width = alphas.shape
    out = (
        np.zeros((rows, shape[0], width, shape[1])),
        np.zeros((rows, shape[0], width, shape[1])),
        np.zeros((rows, shape[0], width)),
    )
    bounds = [*np.flatnonzero(np.diff(counts, prepend=-1)), rows]
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        m = int(counts[start])
        if m:
            for array, part in zip(out, run(slice(start, stop), alphas[start:stop, :m]), strict=True):
                array[start:stop, :, :m] = part
    return out


def per_point(
    raw: tuple[np.ndarray, np.ndarray, np.ndarray],
    scores: TargetScores,
    fold: Callable[[np.ndarray, bool], np.ndarray] | None = None,
    order: np.ndarray | None = None,
) -> PathGradients:
    """:class:`PathGradients` from :func:`path_gradients`' arrays of rows in ``order`` (back in
    the callers' order), ``fold`` mapping model columns to features at every point."""
    if order is not None:
        back = np.argsort(order)
        raw = tuple(array[back] for array in raw)
        scores = TargetScores(scores.targets[back], scores.at_input[back], scores.at_baseline[back])
    densities, gradients, at_points = raw
    rows, n_targets, n, columns = densities.shape
    flat_d = densities.reshape(rows * n_targets * n, columns)
    flat_g = gradients.reshape(rows * n_targets * n, columns)
    if fold is not None:
        flat_d, flat_g = fold(flat_d, False), fold(flat_g, True)
    return PathGradients(
        attributions=flat_d.reshape(rows * n_targets, n, -1),
        gradients=flat_g.reshape(rows * n_targets, n, -1),
        scores=at_points.reshape(rows * n_targets, n),
        prediction=scores.at_input.reshape(-1),
        baseline_prediction=scores.at_baseline.reshape(-1),
        targets=scores.targets,
    )


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

    @property
    def output_scale(self) -> float:
        """The explained output's scale (the unit of ``ig.atol``): 1 for a probability (a
        calibrated or ``explain: probability`` output), else the baseline's largest absolute
        score, at least 1 (a logit, or a regression output in its own units)."""
        if self.adapter.metadata.calibration.method != "none" or self.output.explain == "probability":
            return 1.0
        return float(max(1.0, np.abs(self.baseline_scores).max(initial=0.0)))

    def layer(self, name: str) -> LayerAttributor:
        """An attributor for the units of the hidden layer ``name``."""
        return LayerAttributor(self, name)

    def inputs(
        self,
        numeric: np.ndarray,
        categorical: np.ndarray,
        targets: np.ndarray | None,
        baselines: RowBaselines | None = None,
    ) -> InputPaths:
        """The rows' numeric tensor and embedding outputs, with their baselines (the run's
        baseline row, or ``baselines``: one encoded row per row) and scores."""
        x_num, x_cat = self.tensors(numeric, categorical)
        embeddings, scores = self.embed(x_num, x_cat)
        explained = self.scores(scores, targets)
        bases = [self.base_num, *self.base_embeddings]
        if baselines is not None:
            base_num, base_cat = self.tensors(*baselines)
            base_embeddings, base_scores = self.embed(base_num, base_cat)
            bases = [base_num, *base_embeddings]
            explained.at_baseline = np.take_along_axis(self.ops.numpy(base_scores), explained.targets, axis=1)
        return InputPaths(
            values=[x_num, *embeddings],
            bases=bases,
            summed=[False] + [True] * len(embeddings),
            x_cat=x_cat,
            explained=explained,
        )

    def attribute(
        self,
        numeric: np.ndarray,
        categorical: np.ndarray,
        n_steps: int,
        targets: np.ndarray | None = None,
        baselines: RowBaselines | None = None,
    ) -> FixedStepResult:
        paths = self.inputs(numeric, categorical, targets, baselines)
        integrals = self.input_integrals(
            paths.values, paths.bases, paths.x_cat, n_steps, paths.explained.targets
        )
        return combine(
            self.ops, integrals, paths.values, paths.bases, paths.summed, paths.explained, self.fold
        )

    def path_gradients(
        self,
        numeric: np.ndarray,
        categorical: np.ndarray,
        alphas: np.ndarray,
        targets: np.ndarray | None = None,
        baselines: RowBaselines | None = None,
    ) -> PathGradients:
        """The integrand at each row's points (``[rows, n]``, NaN pads unused ones): one forward
        for every row, then one vectorised pass per group of rows with as many points."""
        order = point_order(alphas)
        paths = self.inputs(
            numeric[order],
            categorical[order],
            None if targets is None else targets[order],
            None if baselines is None else (baselines[0][order], baselines[1][order]),
        )
        columns = sum(
            1 if total else int(np.prod(v.shape[1:]))
            for v, total in zip(paths.values, paths.summed, strict=True)
        )

        def run(group: slice, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            output = self.input_output(paths.x_cat[group], paths.explained.targets[group], points.shape[1])
            values = [value[group] for value in paths.values]
            bases = [rows_of(base, group) for base in paths.bases]
            return path_gradients(
                self.ops, values, bases, paths.summed, points, self.internal_batch_size, output
            )

        shape = (paths.explained.targets.shape[1], columns)
        return per_point(grouped_path_gradients(alphas[order], shape, run), paths.explained, self.fold, order)

    def input_output(
        self, x_cat: Any, targets: np.ndarray, n_steps: int
    ) -> Callable[[list[Any], slice], Any]:
        """The target scores at path points of the numeric inputs and embedding outputs."""

        def output(path: list[Any], rows: slice) -> Any:
            with self.adapter.substitute(self.layers, path[1:]):
                scores = self.adapter(path[0], self.ops.repeat(x_cat[rows], n_steps))
            return self.on_path(scores, targets, rows, n_steps)

        return output

    def input_integrals(
        self, values: list[Any], bases: list[Any], x_cat: Any, n_steps: int, targets: np.ndarray
    ) -> list[np.ndarray]:
        """IG of the numeric inputs and the embedding outputs (vectorised), per target."""
        output = self.input_output(x_cat, targets, n_steps)
        return integrate_paths(
            self.ops, values, bases, n_steps, self.settings.method, self.internal_batch_size, output
        )

    def layer_output(
        self, layer: LayerAttributor, x_num: Any, x_cat: Any, targets: np.ndarray, n_steps: int
    ) -> Callable[[list[Any], slice], Any]:
        """The target scores with ``layer``'s output substituted by path points."""

        def output(path: list[Any], rows: slice) -> Any:
            with self.adapter.substitute([layer.layer], path):
                scores = self.adapter(
                    self.ops.repeat(x_num[rows], n_steps), self.ops.repeat(x_cat[rows], n_steps)
                )
            return self.on_path(scores, targets, rows, n_steps)

        return output

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
        output = self.layer_output(layer, x_num, x_cat, targets, n_steps)
        return integrate_paths(
            self.ops,
            [activation],
            [layer.base],
            n_steps,
            self.settings.method,
            self.internal_batch_size,
            output,
        )[0]


@dataclass
class InputPaths:
    """What the input-level paths of a block of rows start from: the values (numeric tensor,
    then each embedding's output) and their baselines, which are summed over their last axis
    (embeddings), the index tensor, and the explained scores."""

    values: list[Any]
    bases: list[Any]
    summed: list[bool]
    x_cat: Any
    explained: TargetScores


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

    @property
    def output_scale(self) -> float:
        return self.parent.output_scale

    def activations(self, numeric: np.ndarray, categorical: np.ndarray, targets: np.ndarray | None) -> tuple:
        """The rows' tensors, the layer's output for them and the explained scores."""
        adapter = self.parent.adapter
        x_num, x_cat = self.parent.tensors(numeric, categorical)
        with adapter.inference(), adapter.capture([self.layer]) as captured:
            scores = adapter(x_num, x_cat)
        return x_num, x_cat, captured[0], self.parent.scores(scores, targets)

    def attribute(
        self, numeric: np.ndarray, categorical: np.ndarray, n_steps: int, targets: np.ndarray | None = None
    ) -> FixedStepResult:
        x_num, x_cat, activation, explained = self.activations(numeric, categorical, targets)
        integral = self.parent.layer_integrals(self, x_num, x_cat, activation, n_steps, explained.targets)
        return combine(self.parent.ops, [integral], [activation], [self.base], [False], explained)

    def path_gradients(
        self,
        numeric: np.ndarray,
        categorical: np.ndarray,
        alphas: np.ndarray,
        targets: np.ndarray | None = None,
    ) -> PathGradients:
        order = point_order(alphas)
        x_num, x_cat, activation, explained = self.activations(
            numeric[order], categorical[order], None if targets is None else targets[order]
        )
        parent = self.parent

        def run(group: slice, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            n = points.shape[1]
            output = parent.layer_output(self, x_num[group], x_cat[group], explained.targets[group], n)
            return path_gradients(
                parent.ops,
                [activation[group]],
                [self.base],
                [False],
                points,
                parent.internal_batch_size,
                output,
            )

        shape = (explained.targets.shape[1], self.units)
        return per_point(grouped_path_gradients(alphas[order], shape, run), explained, None, order)
