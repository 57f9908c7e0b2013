"""How encoded rows reach the model, framework-neutral: the input spec's ``calling`` style.

The IG engine works on two blocks per row: floats (numeric features, scaled as the model saw
them in training) and categorical indices. With ``calling: dense`` the categorical features are
one-hot columns of the float block instead (no embedding layer: IG runs over the one-hot
columns, and :func:`fold_dense` sums each block back into its feature). Backends build the
model's arguments from the blocks with :func:`feature_columns` (``dict`` and ``per_feature``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ig_airflow.exceptions import ArtifactError
from ig_airflow.spec import InputSpec

NO_CATEGORY = -1  # a dense row's categorical index meaning "no one-hot column set"


def model_arrays(
    spec: InputSpec, numeric: np.ndarray, categorical: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Encoded rows -> ``(float block, index block)`` as the model takes them."""
    centers = np.array([f.center for f in spec.numeric], dtype=np.float64)
    scales = np.array([f.scale for f in spec.numeric], dtype=np.float64)
    scaled = (np.asarray(numeric, dtype=np.float64) - centers) / scales
    if spec.calling != "dense":
        return scaled, categorical
    numeric_pos, onehot, width = spec.dense_layout()
    dense = np.zeros((len(scaled), width), dtype=np.float64)
    dense[:, numeric_pos] = scaled
    for j, positions in enumerate(onehot):
        lookup = np.full(max(positions, default=0) + 2, -1, dtype=np.int64)
        for index, position in positions.items():
            lookup[index] = position
        column = lookup[np.where(categorical[:, j] >= 0, categorical[:, j], -1)]
        rows = np.flatnonzero(column >= 0)
        dense[rows, column[rows]] = 1.0
    return dense, np.zeros((len(scaled), 0), dtype=np.int64)


def fold_dense(spec: InputSpec, block: np.ndarray, per_unit: bool) -> np.ndarray:
    """Model-space columns -> one column per feature: a dense one-hot block summed into its
    feature; ``per_unit`` (raw integrated gradients) also undoes the numeric scaling."""
    scales = np.array([f.scale for f in spec.numeric], dtype=np.float64)
    if spec.calling != "dense":
        if per_unit and len(scales):
            block = block.copy()
            block[:, : len(scales)] /= scales
        return block
    numeric_pos, onehot, _ = spec.dense_layout()
    numeric = block[:, numeric_pos] / (scales if per_unit else 1.0)
    groups = [block[:, sorted(p.values())].sum(axis=1, keepdims=True) for p in onehot]
    return np.concatenate([numeric, *groups], axis=1) if groups else numeric


def feature_columns(spec: InputSpec, x_num: Any, x_cat: Any) -> dict[str, Any]:
    """Feature name -> its column of the blocks (``[batch, 1]``, or ``[batch]`` with
    ``feature_shape: vector``), in spec order."""
    columns: dict[str, Any] = {}
    for j, name in enumerate(spec.numeric_names):
        columns[name] = x_num[:, j : j + 1] if spec.feature_shape == "column" else x_num[:, j]
    for j, name in enumerate(spec.categorical_names):
        columns[name] = x_cat[:, j : j + 1] if spec.feature_shape == "column" else x_cat[:, j]
    return columns


def attributed_layers(spec: InputSpec) -> list[str]:
    """The layer each categorical feature is attributed at (none with ``calling: dense``, where
    the one-hot columns are inputs); a feature without one is refused naming it."""
    if spec.calling == "dense":
        return []
    unnamed = [f.name for f in spec.categorical if not f.embedding_layer]
    if unnamed:
        raise ArtifactError(
            f"categorical feature(s) {unnamed}: name the embedding_layer each feeds (the layer its "
            "indices reach; for Keras, found downstream of the feature's Input when saved), or use "
            "inputs.calling: dense for one-hot inputs"
        )
    return [str(f.embedding_layer) for f in spec.categorical]
