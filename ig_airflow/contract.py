"""The calling contract between a model and ig_airflow, checked when an artifact is saved and
every time it is loaded, so that a mismatch fails early with a reason instead of explaining the
wrong function.

ig_airflow calls a model with numeric features in input-spec order and categorical features as
vocabulary indices (:mod:`ig_airflow.core.encoding`), then selects and calibrates the output.
``save_artifact(..., example_rows=df, example_predictions=p)`` takes a few raw rows and the
predictions the user's own code (its serving or evaluation path) made for them; saving refuses
when ig_airflow's encoding and call do not reproduce them, naming the first row that differs and,
by trying each categorical feature's other plausible encodings, the likely culprit. The rows are
stored in the artifact and re-run on every load.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ig_airflow.core.backend import FrameworkBackend
from ig_airflow.core.encoding import encode_rows, placeholder_rows
from ig_airflow.core.outputs import is_per_target, target_columns, target_setting
from ig_airflow.exceptions import ArtifactError, IGAirflowError
from ig_airflow.io import read_parquet, write_parquet
from ig_airflow.spec import EXPECTED_PREDICTION, ArtifactMetadata, ExampleCheck, InputSpec


def convention(spec: InputSpec) -> str:
    """How ig_airflow feeds the model, in words."""
    numeric = ", ".join(spec.numeric_names) or "none"
    categorical = ", ".join(spec.categorical_names) or "none"
    if spec.calling == "dense":
        return (
            f"one float tensor [batch, {spec.dense_layout()[2]}] (numeric {numeric}; one-hot {categorical})"
        )
    if spec.calling in ("dict", "per_feature"):
        how = "a dict {feature: tensor}" if spec.calling == "dict" else "one tensor per feature"
        return f"{how} ({spec.feature_shape}): numeric {numeric}; categorical {categorical}"
    return (
        f"x_num float [batch, {len(spec.numeric)}] ({numeric}) and x_cat int [batch, "
        f"{len(spec.categorical)}] of vocabulary indices ({categorical})"
    )


def comparable(metadata: ArtifactMetadata, scores: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """The model's calibrated scores shaped like the user's predictions: all columns for a
    ``[rows, n_outputs]`` matrix, else the one explained column."""
    if expected.ndim == 2 and expected.shape[1] > 1:
        if expected.shape[1] != scores.shape[1]:
            raise ArtifactError(
                f"example_predictions have {expected.shape[1]} columns; the model returns {scores.shape[1]}"
            )
        return scores
    setting = target_setting(metadata.output)
    if scores.shape[1] > 1 and (setting is None or is_per_target(setting)):
        raise ArtifactError(
            f"the model returns {scores.shape[1]} outputs per row: give example_predictions as "
            f"[rows, {scores.shape[1]}] (every calibrated output), or one output.target"
        )
    return np.take_along_axis(scores, target_columns(setting, metadata.output, scores), axis=1)


def call_model(
    backend: FrameworkBackend,
    model: Any,
    metadata: ArtifactMetadata,
    rows: tuple[np.ndarray, np.ndarray],
    uri: str,
) -> np.ndarray:
    """The explained score of encoded rows; a model that fails is reported with its own message."""
    try:
        predicted = np.asarray(backend.predict(model, metadata, *rows), dtype=np.float64)
        predicted = predicted.reshape(len(predicted), -1)
    except IGAirflowError:
        raise
    except Exception as exc:  # noqa: BLE001 - the model's own error, whatever its type
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        message = next((line for line in lines if not line.startswith("Exception encountered")), "")
        raise ArtifactError(
            f"{uri}: the model fails when called as ig_airflow calls it, with "
            f"{convention(metadata.inputs)}: {type(exc).__name__}: {message}"
        ) from None
    if len(predicted) != len(rows[0]):
        raise ArtifactError(
            f"{uri}: the model returned {len(predicted)} value(s) for {len(rows[0])} row(s) "
            f"called with {convention(metadata.inputs)}"
        )
    return predicted


def smoke_test(backend: FrameworkBackend, model: Any, metadata: ArtifactMetadata, uri: str) -> None:
    """One forward pass on two rows of zeros and out-of-vocabulary indices."""
    scores = call_model(backend, model, metadata, placeholder_rows(metadata.inputs, 2), uri)
    if not np.isfinite(scores).all():
        raise ArtifactError(f"{uri}: the model returns non-finite outputs on rows of zeros")
    try:
        target_columns(target_setting(metadata.output), metadata.output, scores)
    except ArtifactError as exc:
        raise ArtifactError(f"{uri}: {exc}") from None


def write_examples(
    directory: Path, spec: InputSpec, rows: pd.DataFrame, predictions: Any, tolerance: float
) -> ExampleCheck:
    """Store the example rows (feature columns) and the user's predictions in the artifact."""
    expected = np.asarray(predictions, dtype=np.float64)
    expected = expected.reshape(len(expected), -1) if expected.ndim else expected.reshape(1, 1)
    if len(rows) == 0 or len(expected) != len(rows):
        raise ArtifactError(
            f"example_rows ({len(rows)} rows) and example_predictions ({len(expected)} rows) must be "
            "non-empty and of the same length"
        )
    encode_rows(rows, spec)  # the rows must be valid inputs
    table = pa.Table.from_pandas(rows[spec.feature_names].reset_index(drop=True), preserve_index=False)
    check = ExampleCheck(rows=len(rows), atol=tolerance, rtol=tolerance)
    if expected.shape[1] == 1:
        table = table.append_column(EXPECTED_PREDICTION, pa.array(expected[:, 0]))
    for j in range(expected.shape[1] if expected.shape[1] > 1 else 0):
        table = table.append_column(f"{EXPECTED_PREDICTION}__{j}", pa.array(expected[:, j]))
    write_parquet(str(directory / check.file), table)
    return check


def read_examples(directory: Path, check: ExampleCheck) -> tuple[pd.DataFrame, np.ndarray]:
    """The stored example rows and the user's predictions (``[rows, 1]`` or ``[rows, n_outputs]``)."""
    frame = read_parquet(str(directory / check.file)).to_pandas()
    columns = [c for c in frame.columns if c.startswith(EXPECTED_PREDICTION)]
    expected = frame[columns].to_numpy(np.float64)
    return frame.drop(columns=columns), expected


def check_examples(
    backend: FrameworkBackend, model: Any, metadata: ArtifactMetadata, directory: Path, uri: str
) -> None:
    """Re-run the stored example rows; refuse when the predictions are not reproduced."""
    check = metadata.examples
    if check is None:
        return
    frame, expected = read_examples(directory, check)
    got = comparable(
        metadata, call_model(backend, model, metadata, encode_rows(frame, metadata.inputs), uri), expected
    )
    differs = ~np.isclose(got, expected, atol=check.atol, rtol=check.rtol).all(axis=1)
    if not differs.any():
        return
    first = int(np.argmax(differs))
    culprit = likely_culprit(backend, model, metadata, frame, expected, uri)
    raise ArtifactError(
        f"{uri}: ig_airflow does not reproduce the example predictions: {int(differs.sum())} of "
        f"{len(frame)} rows differ, first row {first}: expected {_row(expected[first])}, got "
        f"{_row(got[first])}. {culprit}"
    )


def _row(values: np.ndarray) -> str:
    return ", ".join(f"{v:.6g}" for v in values)


def likely_culprit(
    backend: FrameworkBackend,
    model: Any,
    metadata: ArtifactMetadata,
    frame: pd.DataFrame,
    expected: np.ndarray,
    uri: str,
) -> str:
    """The categorical feature whose other plausible encoding reproduces the predictions."""
    check = metadata.examples
    spec = metadata.inputs
    for j, feature in enumerate(spec.categorical):
        if feature.indices is not None or feature.input_encoding == "string":
            continue  # an explicit index map, or the model's own lookup: nothing to guess
        for how, vocabulary, oov_index in _other_encodings(
            feature.vocabulary, feature.oov_index, frame[feature.name]
        ):
            changed = feature.model_copy(
                update={"vocabulary": vocabulary, "oov_index": oov_index, "indices": None}
            )
            categorical = [changed if k == j else f for k, f in enumerate(spec.categorical)]
            trial = spec.model_copy(update={"categorical": categorical})
            tried = metadata.model_copy(update={"inputs": trial})
            try:
                got = comparable(
                    tried, call_model(backend, model, tried, encode_rows(frame, trial), uri), expected
                )
            except (IGAirflowError, ValueError):
                continue
            if np.allclose(got, expected, atol=check.atol, rtol=check.rtol):
                return (
                    f"Likely culprit: feature {feature.name!r}: the predictions are reproduced when its "
                    f"categories are indexed {how} [{_preview(vocabulary)}] with the out-of-vocabulary "
                    f"index at {oov_index}, not as saved [{_preview(feature.vocabulary)}] with it at "
                    f"{feature.oov_index}; save the vocabulary and out-of-vocabulary index the model was "
                    "trained with."
                )
    return (
        "No single categorical encoding explains it: check that the predictions are the explained "
        f"score ({metadata.output.explain} of output {target_setting(metadata.output) or 0}, calibration "
        f"{metadata.calibration.method}) and that the model takes {convention(spec)}."
    )


def _other_encodings(
    vocabulary: list[str], oov_index: int | None, column: pd.Series
) -> Iterator[tuple[str, list[str], int]]:
    seen = list(dict.fromkeys(str(v) for v in column if str(v) in set(vocabulary)))
    orders = [("in sorted order", sorted(vocabulary))]
    if isinstance(column.dtype, pd.CategoricalDtype):
        categories = [str(c) for c in column.cat.categories]
        if set(categories) == set(vocabulary):
            orders.append(("in the order of the pandas categories", categories))
    orders.append(("in order of first appearance", seen + [v for v in vocabulary if v not in seen]))
    for how, order in orders:
        if order != vocabulary:
            yield how, order, oov_index
    for other in sorted({0, len(vocabulary), None} - {oov_index}, key=lambda i: -1 if i is None else i):
        where = "none (values at 0..K-1, as pandas codes)" if other is None else other
        yield f"with the out-of-vocabulary index at {where}", vocabulary, other


def _preview(values: list[str], n: int = 4) -> str:
    shown = ", ".join(repr(v) for v in values[:n])
    return f"{shown}, ..." if len(values) > n else shown
