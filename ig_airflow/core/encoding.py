"""Rows (pandas or Arrow) to the two arrays every backend takes: numeric values and
categorical indices, in input-spec order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from ig_airflow.exceptions import InputDataError
from ig_airflow.spec import InputSpec


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


def placeholder_rows(spec: InputSpec, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` encoded rows every model of ``spec`` accepts: zeros, and each categorical feature's
    out-of-vocabulary index (its lowest known index when it has none)."""
    indices = [
        f.oov_index if f.oov_index is not None else min(f.index_map().values()) for f in spec.categorical
    ]
    return np.zeros((n, len(spec.numeric))), np.array([indices] * n, dtype=np.int64).reshape(n, -1)
