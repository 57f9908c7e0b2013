"""PyTorch model wrapper: rows -> tensors -> the calibrated scalar that IG explains.

Convention: the model is called as ``model(x_num, x_cat)`` with ``x_num`` a float tensor
``[batch, n_numeric]`` in input-spec order and ``x_cat`` a long tensor
``[batch, n_categorical]`` of embedding indices, and returns logits ``[batch]`` or
``[batch, n_outputs]``. The wrapper selects ``output.index`` and applies the link or the
calibration (Platt ``sigmoid(a*z+b)``, temperature ``softmax(z/T)``), so attributions sum to
the change in the calibrated score.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ig_airflow.artifacts import ArtifactMetadata, Calibration, InputSpec, OutputSpec
from ig_airflow.exceptions import ArtifactError, InputDataError


def encode_rows(data: pa.Table | pd.DataFrame, spec: InputSpec) -> tuple[np.ndarray, np.ndarray]:
    """Turn rows into ``(numeric float64 [B, n_num], categorical int64 [B, n_cat])``.

    Raises :class:`InputDataError` naming the column and the count of bad rows for missing
    columns, non-numeric or null numbers and unseen categories (run validation first to
    quarantine or map them).
    """
    frame = data.to_pandas() if isinstance(data, pa.Table | pa.RecordBatch) else data
    missing = [c for c in spec.feature_names if c not in frame.columns]
    if missing:
        raise InputDataError(f"input is missing feature columns {missing}")
    n = len(frame)
    numeric = np.empty((n, len(spec.numeric)), dtype=np.float64)
    for j, feat in enumerate(spec.numeric):
        values = pd.to_numeric(frame[feat.name], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            raise InputDataError(
                f"column {feat.name!r}: {int(bad.sum())} row(s) are null, non-numeric or infinite "
                f"(first at row {int(np.argmax(bad))})"
            )
        numeric[:, j] = values
    categorical = np.empty((n, len(spec.categorical)), dtype=np.int64)
    for j, feat in enumerate(spec.categorical):
        mapping = feat.index_map()
        column = frame[feat.name].astype("object")
        codes = column.map(mapping)
        unseen = codes.isna()
        if unseen.any():
            examples = sorted({str(v) for v in column[unseen].head(1000)})[:5]
            raise InputDataError(
                f"column {feat.name!r}: {int(unseen.sum())} row(s) have values outside the "
                f"vocabulary, e.g. {examples}"
            )
        categorical[:, j] = codes.to_numpy(dtype=np.int64)
    return numeric, categorical


def select_output(logits: Any, output: OutputSpec, calibration: Calibration) -> Any:
    """Reduce model logits to the scalar per row that is explained (framework-neutral ops
    through the array's own namespace: works for torch tensors and TensorFlow tensors)."""
    ops = _ops(logits)
    if len(logits.shape) == 1:
        logits = ops.reshape(logits, (-1, 1))
    n_outputs = int(logits.shape[-1])
    if output.index >= n_outputs:
        raise ArtifactError(
            f"output index {output.index} is out of range: the model returns {n_outputs} output(s)"
        )
    z = logits[:, output.index]
    if calibration.method == "platt":
        return ops.sigmoid(calibration.a * z + calibration.b)
    if calibration.method == "temperature":
        if n_outputs == 1:
            return ops.sigmoid(z / calibration.temperature)
        return ops.softmax(logits / calibration.temperature)[:, output.index]
    if output.explain == "logit":
        return z
    if output.link == "softmax" and n_outputs > 1:
        return ops.softmax(logits)[:, output.index]
    return ops.sigmoid(z)


class _TorchOps:
    @staticmethod
    def reshape(x: Any, shape: tuple[int, ...]) -> Any:
        return x.reshape(shape)

    @staticmethod
    def sigmoid(x: Any) -> Any:
        import torch

        return torch.sigmoid(x)

    @staticmethod
    def softmax(x: Any) -> Any:
        import torch

        return torch.softmax(x, dim=-1)


class _TFOps:
    @staticmethod
    def reshape(x: Any, shape: tuple[int, ...]) -> Any:
        import tensorflow as tf

        return tf.reshape(x, shape)

    @staticmethod
    def sigmoid(x: Any) -> Any:
        import tensorflow as tf

        return tf.sigmoid(x)

    @staticmethod
    def softmax(x: Any) -> Any:
        import tensorflow as tf

        return tf.nn.softmax(x, axis=-1)


def _ops(x: Any) -> type[_TorchOps] | type[_TFOps]:
    return _TorchOps if type(x).__module__.startswith("torch") else _TFOps


class TorchModelWrapper:
    """Calls a PyTorch model on encoded rows and returns the calibrated explained score.

    Args:
        model: the loaded ``torch.nn.Module`` (eval mode).
        metadata: the artifact metadata (input spec, output, calibration).
        dtype: ``torch.float32`` or ``torch.float64``; the model is cast to it.
        device: torch device.
    """

    def __init__(self, model: Any, metadata: ArtifactMetadata, dtype: Any = None, device: Any = None):
        import torch

        self.dtype = dtype or torch.float32
        self.device = torch.device(device or "cpu")
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        for param in self.model.parameters():
            param.requires_grad_(False)
        self.metadata = metadata
        self.spec = metadata.inputs
        if isinstance(model, torch.jit.ScriptModule) and self.spec.categorical:
            raise ArtifactError(
                "TorchScript models run their submodules inside a compiled graph, so embedding "
                f"layers cannot be attributed ({self.spec.categorical_names}); save the model "
                "with loader 'torch_export' or 'state_dict' instead"
            )
        self.embedding_layers = [self.layer(f.embedding_layer) for f in self.spec.categorical]
        if len({id(m) for m in self.embedding_layers}) != len(self.embedding_layers):
            raise ArtifactError("two categorical features name the same embedding layer")

    def layer(self, name: str) -> Any:
        """The submodule at ``name``; a clear error lists the layers that exist."""
        import torch

        try:
            return self.model.get_submodule(name)
        except AttributeError:
            embeddings = [n for n, m in self.model.named_modules() if isinstance(m, torch.nn.Embedding)]
            others = [n for n, m in self.model.named_modules() if n and not list(m.children())]
            others = [n for n in others if n not in embeddings]
            raise ArtifactError(
                f"unknown layer name {name!r}; embedding layers in the model: {embeddings}; "
                f"other layers: {others}"
            ) from None

    def tensors(self, numeric: np.ndarray, categorical: np.ndarray) -> tuple[Any, Any]:
        import torch

        return (
            torch.as_tensor(numeric, dtype=self.dtype, device=self.device),
            torch.as_tensor(categorical, dtype=torch.long, device=self.device),
        )

    def encode(self, data: pa.Table | pd.DataFrame) -> tuple[Any, Any]:
        return self.tensors(*encode_rows(data, self.spec))

    def __call__(self, x_num: Any, x_cat: Any) -> Any:
        """Explained score per row, shape ``[batch]``."""
        logits = self.model(x_num, x_cat)
        return select_output(logits, self.metadata.output, self.metadata.calibration)
