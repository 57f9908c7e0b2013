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
from ig_airflow.core.encoding import encode_rows
from ig_airflow.exceptions import ArtifactError, IGAirflowError
from ig_airflow.io import read_parquet, write_parquet
from ig_airflow.spec import EXPECTED_PREDICTION, ArtifactMetadata, ExampleCheck, InputSpec


def convention(spec: InputSpec) -> str:
    """How ig_airflow feeds the model, in words."""
    numeric = ", ".join(spec.numeric_names) or "none"
    categorical = ", ".join(spec.categorical_names) or "none"
    return (
        f"x_num float [batch, {len(spec.numeric)}] ({numeric}) and x_cat int [batch, "
        f"{len(spec.categorical)}] of vocabulary indices ({categorical})"
    )


def call_model(
    backend: FrameworkBackend,
    model: Any,
    metadata: ArtifactMetadata,
    rows: tuple[np.ndarray, np.ndarray],
    uri: str,
) -> np.ndarray:
    """The explained score of encoded rows; a model that fails is reported with its own message."""
    try:
        predicted = np.asarray(backend.predict(model, metadata, *rows), dtype=np.float64).reshape(-1)
    except IGAirflowError:
        raise
    except Exception as exc:  # noqa: BLE001 - the model's own error, whatever its type
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
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
    spec = metadata.inputs
    numeric = np.zeros((2, len(spec.numeric)))
    categorical = np.array([[f.oov_index for f in spec.categorical]] * 2, dtype=np.int64).reshape(2, -1)
    if not np.isfinite(call_model(backend, model, metadata, (numeric, categorical), uri)).all():
        raise ArtifactError(f"{uri}: the model returns non-finite outputs on rows of zeros")


def write_examples(
    directory: Path, spec: InputSpec, rows: pd.DataFrame, predictions: Any, tolerance: float
) -> ExampleCheck:
    """Store the example rows (feature columns) and the user's predictions in the artifact."""
    expected = np.asarray(predictions, dtype=np.float64).reshape(-1)
    if len(rows) == 0 or len(expected) != len(rows):
        raise ArtifactError(
            f"example_rows ({len(rows)} rows) and example_predictions ({len(expected)} values) must be "
            "non-empty and of the same length"
        )
    encode_rows(rows, spec)  # the rows must be valid inputs
    table = pa.Table.from_pandas(rows[spec.feature_names].reset_index(drop=True), preserve_index=False)
    check = ExampleCheck(rows=len(rows), atol=tolerance, rtol=tolerance)
    write_parquet(str(directory / check.file), table.append_column(EXPECTED_PREDICTION, pa.array(expected)))
    return check


def check_examples(
    backend: FrameworkBackend, model: Any, metadata: ArtifactMetadata, directory: Path, uri: str
) -> None:
    """Re-run the stored example rows; refuse when the predictions are not reproduced."""
    check = metadata.examples
    if check is None:
        return
    frame = read_parquet(str(directory / check.file)).to_pandas()
    expected = frame.pop(EXPECTED_PREDICTION).to_numpy(np.float64)
    got = call_model(backend, model, metadata, encode_rows(frame, metadata.inputs), uri)
    differs = ~np.isclose(got, expected, atol=check.atol, rtol=check.rtol)
    if not differs.any():
        return
    first = int(np.argmax(differs))
    culprit = likely_culprit(backend, model, metadata, frame, expected, uri)
    raise ArtifactError(
        f"{uri}: ig_airflow does not reproduce the example predictions: {int(differs.sum())} of "
        f"{len(frame)} rows differ, first row {first}: expected {expected[first]:.6g}, got "
        f"{got[first]:.6g}. {culprit}"
    )


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
        for how, vocabulary, oov_index in _other_encodings(
            feature.vocabulary, feature.oov_index, frame[feature.name]
        ):
            changed = feature.model_copy(update={"vocabulary": vocabulary, "oov_index": oov_index})
            categorical = [changed if k == j else f for k, f in enumerate(spec.categorical)]
            trial = spec.model_copy(update={"categorical": categorical})
            try:
                got = call_model(backend, model, metadata, encode_rows(frame, trial), uri)
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
        f"score ({metadata.output.explain} of output {metadata.output.index or 0}, calibration "
        f"{metadata.calibration.method}) and that the model takes {convention(spec)}."
    )


def _other_encodings(
    vocabulary: list[str], oov_index: int, column: pd.Series
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
    for other in sorted({0, len(vocabulary)} - {oov_index}):
        yield f"with the out-of-vocabulary index at {other}", vocabulary, other


def _preview(values: list[str], n: int = 4) -> str:
    shown = ", ".join(repr(v) for v in values[:n])
    return f"{shown}, ..." if len(values) > n else shown
