"""From model logits to the one calibrated score per row that IG explains.

The output column is selected (``output.index``) and the link or calibration applied (Platt
``sigmoid(a*z+b)``, temperature ``softmax(z/T)``), so attributions sum to the change in the
calibrated score. Written once for every framework through its :class:`TensorOps`.
"""

from __future__ import annotations

from typing import Any

from ig_airflow.core.backend import TensorOps
from ig_airflow.exceptions import ArtifactError
from ig_airflow.spec import Calibration, OutputSpec


def select_output(logits: Any, output: OutputSpec, calibration: Calibration, ops: TensorOps) -> Any:
    """Reduce logits ``[batch]`` or ``[batch, n_outputs]`` to the explained score ``[batch]``."""
    if len(logits.shape) == 1:
        logits = ops.reshape(logits, (-1, 1))
    n_outputs = int(logits.shape[-1])
    index = output_column(output, n_outputs)
    z = logits[:, index]
    if calibration.method == "platt":
        return ops.sigmoid(calibration.a * z + calibration.b)
    if calibration.method == "temperature":
        if n_outputs == 1:
            return ops.sigmoid(z / calibration.temperature)
        return ops.softmax(logits / calibration.temperature)[:, index]
    if output.explain == "logit":
        return z
    if output.link == "softmax" and n_outputs > 1:
        return ops.softmax(logits)[:, index]
    return ops.sigmoid(z)


def output_column(output: OutputSpec, n_outputs: int) -> int:
    """The output column to explain: ``output.index``, which a multi-column output must name."""
    if output.index is None:
        if n_outputs > 1:
            raise ArtifactError(
                f"the model returns {n_outputs} outputs per row; name the one to explain with "
                "output={'index': i} (a multi-column output is never explained by column 0 by default)"
            )
        return 0
    if output.index >= n_outputs:
        raise ArtifactError(
            f"output index {output.index} is out of range: the model returns {n_outputs} output(s)"
        )
    return output.index
