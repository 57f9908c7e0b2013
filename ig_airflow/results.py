"""The output table of the IG stage: its columns and their types, for writers, readers and tests.

Columns: the id columns (as typed in the input); with several targets per row (a list,
``predicted``, ``top_k``) one output row per (row, target) and :data:`TARGET_TYPES`: ``target``
(class name or output column) and ``target_rank`` (1 = first listed or highest score);
``attr__<feature>`` for every input feature
(categorical features summed over their embedding dimensions; with ``baseline.kind:
distribution`` the mean over the drawn baselines, followed by ``attr_se__<feature>``, its
Monte-Carlo standard error), then :data:`RESULT_COLUMNS`:
``prediction``, ``baseline_prediction``, ``delta`` (sum of attributions minus the prediction
change), ``completeness_error`` (``|delta| / |prediction - baseline_prediction|``), ``n_steps``
and ``converged``; with ``ig.loss``, ``loss_attr__<feature>`` and :data:`LOSS_COLUMNS` (one
loss per input row, repeated on its target rows; null on unlabelled rows); for each layer in
``ig.layer_attributions``: ``layer__<layer>__<unit>`` per unit of its output,
``layer_delta__<layer>`` and ``layer_n_steps__<layer>``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pyarrow as pa

ATTRIBUTION_PREFIX = "attr__"
STANDARD_ERROR_PREFIX = "attr_se__"  # Expected Gradients: Monte-Carlo standard error of attr__<feature>
LAYER_PREFIX = "layer__"
RESULT_TYPES: dict[str, pa.DataType] = {
    "prediction": pa.float64(),
    "baseline_prediction": pa.float64(),
    "delta": pa.float64(),
    "completeness_error": pa.float64(),
    "n_steps": pa.int64(),
    "converged": pa.bool_(),
}
RESULT_COLUMNS = list(RESULT_TYPES)
TARGET_COLUMN, RANK_COLUMN = "target", "target_rank"
TARGET_TYPES: dict[str, pa.DataType] = {TARGET_COLUMN: pa.string(), RANK_COLUMN: pa.int64()}
LOSS_PREFIX = "loss_attr__"  # ig.loss: one feature's attribution of the row's loss
LOSS_TYPES: dict[str, pa.DataType] = {  # ig.loss: null on unlabelled rows
    "loss": pa.float64(),  # the row's loss against its label
    "loss_at_baseline": pa.float64(),  # the baseline's loss against the same label
    "loss_delta": pa.float64(),  # sum of loss attributions minus (loss - loss_at_baseline)
    "loss_n_steps": pa.int64(),
    "loss_converged": pa.bool_(),
}
LOSS_COLUMNS = list(LOSS_TYPES)


def attribution_column(feature: str) -> str:
    """Column of one input feature's attribution."""
    return f"{ATTRIBUTION_PREFIX}{feature}"


def standard_error_column(feature: str) -> str:
    """Column of the Monte-Carlo standard error of one feature's mean attribution (``baseline.kind:
    distribution``, Expected Gradients)."""
    return f"{STANDARD_ERROR_PREFIX}{feature}"


def loss_attribution_column(feature: str) -> str:
    """Column of one input feature's attribution of the row's loss (``ig.loss``)."""
    return f"{LOSS_PREFIX}{feature}"


def loss_features(names: Sequence[str]) -> list[str]:
    """The features of the ``loss_attr__<feature>`` columns among ``names``, in column order."""
    return [n[len(LOSS_PREFIX) :] for n in names if n.startswith(LOSS_PREFIX)]


def layer_column(layer: str, unit: int) -> str:
    """Column of one unit of a hidden layer's attributions (``ig.layer_attributions``)."""
    return f"{LAYER_PREFIX}{layer}__{unit}"


def layer_result_columns(layer: str) -> tuple[str, str]:
    """Columns of a hidden layer's completeness delta and final step count."""
    return f"layer_delta__{layer}", f"layer_n_steps__{layer}"


def attribution_features(names: Sequence[str]) -> list[str]:
    """The features of the ``attr__<feature>`` columns among ``names``, in column order."""
    return [n[len(ATTRIBUTION_PREFIX) :] for n in names if n.startswith(ATTRIBUTION_PREFIX)]


def parse_layer_column(name: str) -> tuple[str, int] | None:
    """``(layer, unit)`` of a ``layer__<layer>__<unit>`` column, else None."""
    if not name.startswith(LAYER_PREFIX):
        return None
    layer, _, unit = name[len(LAYER_PREFIX) :].rpartition("__")
    return layer, int(unit)


def output_schema(
    id_fields: Sequence[pa.Field],
    features: Sequence[str],
    layer_units: Mapping[str, int],
    per_target: bool = False,
    standard_errors: bool = False,
    loss: bool = False,
) -> pa.Schema:
    """Schema of the output table: ids, (targets,) attributions, (their standard errors,) results,
    then each layer's columns."""
    fields = list(id_fields)
    if per_target:
        fields += [pa.field(name, kind) for name, kind in TARGET_TYPES.items()]
    fields += [pa.field(attribution_column(f), pa.float64()) for f in features]
    if standard_errors:
        fields += [pa.field(standard_error_column(f), pa.float64()) for f in features]
    fields += [pa.field(name, kind) for name, kind in RESULT_TYPES.items()]
    if loss:
        fields += [pa.field(loss_attribution_column(f), pa.float64()) for f in features]
        fields += [pa.field(name, kind) for name, kind in LOSS_TYPES.items()]
    for layer, units in layer_units.items():
        delta, steps = layer_result_columns(layer)
        fields += [pa.field(layer_column(layer, i), pa.float64()) for i in range(units)]
        fields += [pa.field(delta, pa.float64()), pa.field(steps, pa.int64())]
    return pa.schema(fields)
