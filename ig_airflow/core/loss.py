"""Explaining the loss: Integrated Gradients of each row's loss against its own label.

The explained scalar of a labelled row is ``loss(s(x' + a (x - x')), y)``: the loss of the
calibrated scores ``s`` at each path point against the row's label ``y``, integrated along the
same straight path with the same rule (fixed or adaptive) as the prediction, so that the loss
attributions add up to ``loss(x, y) - loss(x', y)`` (completeness; the baseline is scored
against the row's own label). A positive attribution means the feature's value raises the
row's loss: it pushes the model away from the label.

Losses (``ig.loss``): ``log_loss`` of a binary probability (``-log p`` of the labelled class),
``cross_entropy`` over the output columns (``-log p[label]``), ``squared_error`` of the
explained output; ``auto`` picks log loss (one column) or cross-entropy (several) for a
probability output (``explain: probability`` or calibrated), else squared error. A log loss of
raw logits applies the output's link (sigmoid, softmax) first. Probabilities are kept within
``[EPS, 1 - EPS]`` by an affine map (not a clip), so the loss stays differentiable everywhere
and bounded by ``-log EPS`` (16.1 nats).

:class:`LabelMap` turns a label column into the numbers the loss needs (0/1, a class column,
a value); a missing label (null, NaN) leaves the row unlabelled, any value that does not map is
an :class:`~ig_airflow.exceptions.InputDataError` naming the column and the value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ig_airflow.core.attribution import InputAttributor, TargetScores
from ig_airflow.core.backend import Attributor, TensorOps
from ig_airflow.core.outputs import is_per_target, target_columns, target_setting
from ig_airflow.exceptions import ConfigError, InputDataError
from ig_airflow.spec import ArtifactMetadata

EPS = 1e-7  # probabilities are mapped into [EPS, 1 - EPS] before the log
LOG_LOSS, CROSS_ENTROPY, SQUARED_ERROR = "log_loss", "cross_entropy", "squared_error"


@dataclass(frozen=True)
class RowLoss:
    """One row's loss as a function of its calibrated scores ``[N, n_outputs]`` and its label.

    Attributes:
        kind: ``log_loss``, ``cross_entropy`` or ``squared_error``.
        column: the output column scored by ``log_loss`` and ``squared_error``.
        link: ``sigmoid`` or ``softmax`` applied to raw scores (logits) before a log loss, else None.
        scale: the loss's scale, the unit of ``ig.atol`` (1 nat; squared output units).
    """

    kind: str
    column: int = 0
    link: str | None = None
    scale: float = 1.0

    def of(self, ops: TensorOps, scores: Any, labels: np.ndarray) -> Any:
        """The loss of each row, ``[N, 1]``: ``labels`` are 0/1 (log loss), class columns
        (cross-entropy) or values (squared error), one per row."""
        n = len(labels)
        if self.kind == SQUARED_ERROR:
            error = ops.take(scores, np.full((n, 1), self.column)) - ops.constant(labels.reshape(-1, 1))
            return error * error
        if self.link == "sigmoid":
            scores = ops.sigmoid(scores)
        elif self.link == "softmax":
            scores = ops.softmax(scores)
        if self.kind == LOG_LOSS:
            y = ops.constant(labels.reshape(-1, 1))
            p = ops.take(scores, np.full((n, 1), self.column))
            chosen = (1.0 - y) + (2.0 * y - 1.0) * p  # p for a positive row, 1 - p for a negative
        else:
            chosen = ops.take(scores, labels.astype(np.int64).reshape(-1, 1))
        return -ops.log(EPS + (1.0 - 2.0 * EPS) * chosen)


def row_loss(setting: str, metadata: ArtifactMetadata, n_outputs: int, output_scale: float) -> RowLoss:
    """The loss ``ig.loss`` names for this model (``auto`` resolved from its output)."""
    output, calibration = metadata.output, metadata.calibration
    probability = calibration.method != "none" or output.explain == "probability"
    kind = setting
    if kind == "auto":
        kind = (LOG_LOSS if n_outputs == 1 else CROSS_ENTROPY) if probability else SQUARED_ERROR
    if kind == CROSS_ENTROPY:
        if n_outputs < 2:
            raise ConfigError("ig.loss: cross_entropy needs a model with one output column per class")
        return RowLoss(kind, link=None if probability else "softmax")
    column = _scored_column(kind, metadata, n_outputs)
    if kind == LOG_LOSS:
        return RowLoss(kind, column, link=None if probability else "sigmoid")
    return RowLoss(kind, column, scale=output_scale**2)


def _scored_column(kind: str, metadata: ArtifactMetadata, n_outputs: int) -> int:
    """The one output column a log loss or squared error scores (the explained target)."""
    if n_outputs == 1:
        return 0
    setting = target_setting(metadata.output)
    if setting is None or is_per_target(setting):
        raise ConfigError(
            f"ig.loss: {kind} scores one output column, and the model returns {n_outputs}; set the "
            "artifact's output.index (or use cross_entropy)"
        )
    return int(target_columns(setting, metadata.output, np.zeros((1, n_outputs)))[0, 0])


@dataclass(frozen=True)
class LabelMap:
    """How the values of the label column become the numbers a :class:`RowLoss` takes.

    Attributes:
        column: the label column (``data.label_column``), named in errors.
        kind: the loss kind.
        n_outputs: the model's output columns (class columns for cross-entropy).
        classes: the output's class names (``output.classes``), when set.
        positive: the positive class of a log loss (``data.positive_label``; default: the second
            of two class names, else 1); every other value is negative when it was configured.
    """

    column: str
    kind: str
    n_outputs: int
    classes: tuple[str, ...] = ()
    positive: Any = None

    def encode(self, values: Any) -> tuple[np.ndarray, np.ndarray]:
        """The rows' labels as float64 (NaN where unlabelled) and which rows are labelled."""
        codes, uniques = pd.factorize(pd.Series(np.asarray(values, dtype=object)), use_na_sentinel=True)
        mapped = np.array([self.value(v) for v in uniques], dtype=np.float64)
        labelled = codes >= 0
        labels = np.full(len(codes), np.nan)
        labels[labelled] = mapped[codes[labelled]]
        return labels, labelled

    def value(self, label: Any) -> float:
        """One label value as the loss's number; raises naming the column and the value."""
        if self.kind == SQUARED_ERROR:
            if _is_number(label):
                return float(label)
            raise self._error(label, "a number (the loss is squared_error)")
        if self.kind == CROSS_ENTROPY:
            if isinstance(label, str) and label in self.classes:
                return float(self.classes.index(label))
            if _is_number(label) and float(label).is_integer() and 0 <= label < self.n_outputs:
                return float(label)
            expected = f"one of the classes {list(self.classes)}" if self.classes else "a column index"
            raise self._error(label, f"{expected} of the model's {self.n_outputs} outputs")
        return self._binary(label)

    def _binary(self, label: Any) -> float:
        if self.positive is not None:
            return 1.0 if _same(label, self.positive) else 0.0
        if len(self.classes) == 2 and isinstance(label, str) and label in self.classes:
            return float(self.classes.index(label))
        if _is_number(label) and label in (0, 1):
            return float(label)
        expected = f"one of {list(self.classes)} or 0/1" if len(self.classes) == 2 else "0 or 1"
        raise self._error(label, f"{expected}; name the positive class with data.positive_label")

    def _error(self, label: Any, expected: str) -> InputDataError:
        return InputDataError(
            f"label column {self.column!r}: value {label!r} does not map to the model's output; "
            f"expected {expected}"
        )


def label_map(
    column: str, loss: RowLoss, metadata: ArtifactMetadata, n_outputs: int, positive: Any
) -> LabelMap:
    """The :class:`LabelMap` of ``column`` for ``loss`` on this model."""
    return LabelMap(column, loss.kind, n_outputs, tuple(metadata.output.classes or ()), positive)


def sampled_rows(numeric: np.ndarray, categorical: np.ndarray, fraction: float) -> np.ndarray:
    """Which rows are in a ``fraction`` of them chosen by a hash of their encoded values (the
    same rows in every batch, shard and run), as booleans."""
    if fraction >= 1.0:
        return np.ones(len(numeric), dtype=bool)
    values = pd.DataFrame(np.column_stack([numeric, categorical]).astype(np.float64))
    keys = pd.util.hash_pandas_object(values, index=False).to_numpy(np.uint64)
    return keys / float(2**64) < fraction


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and np.isfinite(value)


def _same(label: Any, positive: Any) -> bool:
    """Equal as values (1 == 1.0 == True) or as written ("1" and 1 from YAML and data)."""
    return bool(label == positive) or str(label) == str(positive)


class LossAttributor(InputAttributor):
    """IG of the loss of a block of labelled rows (``labels``, as :meth:`LabelMap.encode` gives
    them), on the prediction attributor's model, baseline and chunk size: the explained score of
    each row is its loss. Its ``targets`` are the rows' positions in ``labels`` (``[B, 1]``), so
    the adaptive rules' subsets of rows keep their labels.

    Args:
        parent: the run's input attributor (numeric inputs and embedding layers).
        loss: the row loss.
        labels: one label per row of the block that will be explained.
    """

    def __init__(self, parent: Attributor, loss: RowLoss, labels: np.ndarray):
        if not isinstance(parent, InputAttributor):
            raise ConfigError(f"ig.loss: {type(parent).__name__} attributes no loss (vectorised engine only)")
        vars(self).update(vars(parent))  # the same model, baseline embeddings and chunk size
        self.loss = loss
        self.labels = np.asarray(labels, dtype=np.float64)

    @property
    def output_scale(self) -> float:
        return self.loss.scale

    def scores(self, scores: Any, targets: np.ndarray | None) -> TargetScores:
        """Each row's loss at the input and at the baseline (against its own label)."""
        if targets is None:
            targets = np.arange(len(self.labels)).reshape(-1, 1)
        labels = self.labels[targets[:, 0]]
        at_baseline = self.ops.constant(np.repeat(self.baseline_scores[None, :], len(labels), axis=0))
        return TargetScores(
            targets=targets,
            at_input=self.ops.numpy(self.loss.of(self.ops, scores, labels)),
            at_baseline=self.ops.numpy(self.loss.of(self.ops, at_baseline, labels)),
        )

    def on_path(self, scores: Any, targets: np.ndarray, rows: slice, n_steps: int) -> Any:
        """The loss at the path points of ``rows``, each against its row's label."""
        return self.loss.of(self.ops, scores, np.repeat(self.labels[targets[rows, 0]], n_steps))
