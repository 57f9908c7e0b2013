"""From model logits to the calibrated scores that IG explains, and which of them to explain.

Every output column is calibrated (link ``sigmoid``/``softmax``, Platt ``sigmoid(a*z+b)``,
temperature ``softmax(z/T)``), so attributions sum to the change in the calibrated score. The
target(s) of each row are the columns named by ``output.target`` (or ``output.index``, or the
run's ``ig.target``): fixed columns or class names, each row's argmax (``predicted``) or its
``top_k``. Written once for every framework through its :class:`TensorOps`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ig_airflow.config import Target, TopK
from ig_airflow.core.backend import TensorOps
from ig_airflow.exceptions import ArtifactError
from ig_airflow.spec import Calibration, OutputSpec

PREDICTED = "predicted"


def calibrated_scores(logits: Any, output: OutputSpec, calibration: Calibration, ops: TensorOps) -> Any:
    """Logits ``[batch]`` or ``[batch, n_outputs]`` -> calibrated scores ``[batch, n_outputs]``."""
    if len(logits.shape) == 1:
        logits = ops.reshape(logits, (-1, 1))
    n_outputs = int(logits.shape[-1])
    if calibration.method == "platt":
        return ops.sigmoid(calibration.a * logits + calibration.b)
    if calibration.method == "temperature":
        if n_outputs == 1:
            return ops.sigmoid(logits / calibration.temperature)
        return ops.softmax(logits / calibration.temperature)
    if output.explain == "logit":
        return logits
    if output.link == "softmax" and n_outputs > 1:
        return ops.softmax(logits)
    return ops.sigmoid(logits)


def target_setting(output: OutputSpec, override: Target | None = None) -> Target | None:
    """The configured target: the run's ``ig.target``, else the artifact's target or index."""
    if override is not None:
        return override
    return output.target if output.target is not None else output.index


def is_per_target(setting: Target | None) -> bool:
    """Whether the output has one row per (row, target): a list, ``predicted`` or top_k."""
    return isinstance(setting, list | TopK) or setting == PREDICTED


def target_columns(setting: Target | None, output: OutputSpec, scores: np.ndarray) -> np.ndarray:
    """The output column(s) to explain for each row, int ``[batch, n_targets]``."""
    n_rows, n_outputs = scores.shape
    if setting is None:
        if n_outputs > 1:
            raise ArtifactError(
                f"the model returns {n_outputs} outputs per row; name the one(s) to explain with "
                "output={'target': i | 'class' | [..] | 'predicted' | {'top_k': k}} or ig.target "
                "(a multi-column output is never explained by column 0 by default)"
            )
        return np.zeros((n_rows, 1), dtype=np.int64)
    if setting == PREDICTED:
        return np.argmax(scores, axis=1).reshape(-1, 1).astype(np.int64)
    if isinstance(setting, TopK):
        if setting.top_k > n_outputs:
            raise ArtifactError(f"top_k {setting.top_k} > the model's {n_outputs} outputs")
        order = np.argsort(-scores, axis=1, kind="stable")
        return order[:, : setting.top_k].astype(np.int64)
    chosen = setting if isinstance(setting, list) else [setting]
    columns = [_column(one, output, n_outputs) for one in chosen]
    return np.tile(np.asarray(columns, dtype=np.int64), (n_rows, 1))


def _column(target: int | str, output: OutputSpec, n_outputs: int) -> int:
    if isinstance(target, str):
        if not output.classes or target not in output.classes:
            raise ArtifactError(
                f"target {target!r} is not a class name; output.classes: {output.classes or 'not set'}"
            )
        column = output.classes.index(target)
    else:
        column = target
    if not 0 <= column < n_outputs:
        raise ArtifactError(f"output index {column} is out of range: the model returns {n_outputs} output(s)")
    return column


def target_label(output: OutputSpec, column: int) -> str:
    """How a target is written in the output: its class name, else its column index."""
    if output.classes and column < len(output.classes):
        return output.classes[column]
    return str(column)
