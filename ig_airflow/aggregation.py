"""Aggregate attributions: feature-level and category-level (feature=value) summaries.

Categorical attributions arrive already summed over their embedding dimensions (one score per
feature, see :mod:`ig_airflow.ig_torch`). This stage summarises a run:

- ``feature_summary.parquet``: per feature, mean |attribution|, mean signed attribution, share
  of the total mean |attribution|, rank, and quantiles (5/25/50/75/95%) of the attribution;
- ``category_summary.parquet``: per categorical feature and value, row count, mean and mean
  |attribution| of that feature's score.

Columns are read one at a time (one column chunk in memory), so a run of any length is
summarised in memory proportional to one column.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ig_airflow.exceptions import InputDataError
from ig_airflow.explain import ATTRIBUTION_PREFIX
from ig_airflow.io import join_uri, open_parquet, write_json, write_parquet

log = logging.getLogger(__name__)
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def attribution_features(uri: str) -> list[str]:
    names = open_parquet(uri).schema_arrow.names
    features = [n[len(ATTRIBUTION_PREFIX) :] for n in names if n.startswith(ATTRIBUTION_PREFIX)]
    if not features:
        raise InputDataError(f"{uri}: no {ATTRIBUTION_PREFIX}<feature> columns; is it an attributions file?")
    return features


def read_column(uri: str, column: str) -> np.ndarray:
    """One column as float64, read row group by row group."""
    parquet = open_parquet(uri)
    parts = [
        parquet.read_row_group(i, columns=[column]).column(0).to_numpy(zero_copy_only=False)
        for i in range(parquet.metadata.num_row_groups)
    ]
    return np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)


def feature_summary(uri: str) -> pd.DataFrame:
    """Global importance of every feature in an attributions file (see the module docstring)."""
    rows = []
    for feature in attribution_features(uri):
        values = read_column(uri, f"{ATTRIBUTION_PREFIX}{feature}")
        quantiles = np.quantile(values, QUANTILES) if len(values) else np.full(len(QUANTILES), np.nan)
        rows.append(
            {
                "feature": feature,
                "rows": len(values),
                "mean_abs_attribution": float(np.abs(values).mean()) if len(values) else 0.0,
                "mean_attribution": float(values.mean()) if len(values) else 0.0,
                **{f"q{int(q * 100):02d}": float(v) for q, v in zip(QUANTILES, quantiles, strict=True)},
            }
        )
    frame = pd.DataFrame(rows)
    total = frame["mean_abs_attribution"].sum()
    frame["share"] = frame["mean_abs_attribution"] / total if total > 0 else 0.0
    frame["rank"] = frame["mean_abs_attribution"].rank(ascending=False, method="first").astype(np.int64)
    return frame.sort_values("rank").reset_index(drop=True)


def category_summary(
    attributions_uri: str, inputs_uri: str, categorical: list[str], id_columns: list[str]
) -> pd.DataFrame:
    """Mean attribution per categorical feature and value. ``inputs_uri`` holds the explained
    rows in the same order as the attributions (the validated file); ids are checked."""
    inputs = open_parquet(inputs_uri)
    attributions = open_parquet(attributions_uri)
    if inputs.metadata.num_rows != attributions.metadata.num_rows:
        raise InputDataError(
            f"{inputs_uri} has {inputs.metadata.num_rows} rows but {attributions_uri} has "
            f"{attributions.metadata.num_rows}; they must be the same explained rows"
        )
    for column in id_columns:
        if not pc.all(
            pc.equal(inputs.read(columns=[column]).column(0), attributions.read(columns=[column]).column(0))
        ).as_py():
            raise InputDataError(f"id column {column!r} differs between {inputs_uri} and {attributions_uri}")
    frames = []
    for feature in categorical:
        values = inputs.read(columns=[feature]).column(0)
        scores = pa.chunked_array([read_column(attributions_uri, f"{ATTRIBUTION_PREFIX}{feature}")])
        table = pa.table({"value": pc.cast(values, pa.string()), "attribution": scores})
        table = table.append_column("abs_attribution", pc.abs(table.column("attribution")))
        grouped = (
            table.group_by("value")
            .aggregate([("attribution", "count"), ("attribution", "mean"), ("abs_attribution", "mean")])
            .to_pandas()
        )
        grouped.columns = ["value", "rows", "mean_attribution", "mean_abs_attribution"]
        grouped.insert(0, "feature", feature)
        frames.append(grouped)
    if not frames:
        return pd.DataFrame(columns=["feature", "value", "rows", "mean_attribution", "mean_abs_attribution"])
    result = pd.concat(frames, ignore_index=True)
    return result.sort_values(["feature", "mean_abs_attribution"], ascending=[True, False]).reset_index(
        drop=True
    )


def summarise_run(
    attributions_uri: str,
    output_uri: str,
    inputs_uri: str | None = None,
    categorical: list[str] | None = None,
    id_columns: list[str] | None = None,
) -> dict[str, Any]:
    """Write ``feature_summary.parquet`` (and ``category_summary.parquet`` when the inputs and
    categorical features are given) under ``output_uri``; returns their URIs and counts."""
    features = feature_summary(attributions_uri)
    outputs = {"feature_summary": join_uri(output_uri, "feature_summary.parquet")}
    write_parquet(outputs["feature_summary"], pa.Table.from_pandas(features, preserve_index=False))
    result: dict[str, Any] = {
        "features": len(features),
        "rows": int(features["rows"].max()) if len(features) else 0,
    }
    if inputs_uri and categorical:
        categories = category_summary(attributions_uri, inputs_uri, categorical, id_columns or [])
        outputs["category_summary"] = join_uri(output_uri, "category_summary.parquet")
        write_parquet(outputs["category_summary"], pa.Table.from_pandas(categories, preserve_index=False))
        result["categories"] = len(categories)
    result["outputs"] = outputs
    result["top_features"] = features.head(5)["feature"].tolist()
    write_json(join_uri(output_uri, "summary.json"), result)
    log.info("summarised %s: top features %s", attributions_uri, result["top_features"])
    return result
