"""Aggregate attributions: feature-level and category-level (feature=value) summaries.

Categorical attributions arrive already summed over their embedding dimensions (one score per
feature, see :mod:`ig_airflow.core.attribution`). This stage summarises a run:

- ``feature_summary.parquet``: per feature, mean |attribution|, mean signed attribution, share
  of the total mean |attribution|, rank, and quantiles (5/25/50/75/95%) of the attribution;
- ``category_summary.parquet``: per categorical feature and value, row count, mean and mean
  |attribution| of that feature's score;
- ``layer_summary.parquet`` (runs with ``ig.layer_attributions``): per hidden layer and unit,
  mean |attribution|, mean attribution, share of the layer's total and rank in the layer.

Columns are streamed one column chunk (row group) at a time: means, ranges and counts are
exact, quantiles come from a 4,096-bin histogram (error at most one bin width), so a run of
any length is summarised in memory proportional to one column chunk. Category summaries read
one categorical column and its attribution column at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ig_airflow.exceptions import InputDataError
from ig_airflow.io import open_parquet, write_json, write_parquet
from ig_airflow.layout import SummaryLayout
from ig_airflow.results import ATTRIBUTION_PREFIX, attribution_column, parse_layer_column
from ig_airflow.results import attribution_features as feature_columns

log = logging.getLogger(__name__)
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
QUANTILE_BINS = 4096


def attribution_features(uri: str) -> list[str]:
    features = feature_columns(open_parquet(uri).schema_arrow.names)
    if not features:
        raise InputDataError(f"{uri}: no {ATTRIBUTION_PREFIX}<feature> columns; is it an attributions file?")
    return features


def iter_column_chunks(uri: str, column: str) -> Iterator[np.ndarray]:
    """A column, one column chunk (row group) at a time, as float64."""
    parquet = open_parquet(uri)
    for i in range(parquet.metadata.num_row_groups):
        yield (
            parquet.read_row_group(i, columns=[column])
            .column(0)
            .to_numpy(zero_copy_only=False)
            .astype(np.float64)
        )


def read_column(uri: str, column: str) -> np.ndarray:
    """A whole column as float64 (for small files and per-row views such as plots)."""
    parts = list(iter_column_chunks(uri, column))
    return np.concatenate(parts) if parts else np.zeros(0)


@dataclass
class ColumnStats:
    """Exact streaming statistics of one column."""

    count: int = 0
    total: float = 0.0
    abs_total: float = 0.0
    low: float = np.inf
    high: float = -np.inf

    def add(self, values: np.ndarray) -> None:
        if len(values):
            self.count += len(values)
            self.total += float(values.sum())
            self.abs_total += float(np.abs(values).sum())
            self.low = min(self.low, float(values.min()))
            self.high = max(self.high, float(values.max()))


def column_stats(uri: str, column: str) -> ColumnStats:
    stats = ColumnStats()
    for chunk in iter_column_chunks(uri, column):
        stats.add(chunk)
    return stats


def column_histogram(uri: str, column: str, edges: np.ndarray) -> np.ndarray:
    """Counts of a column on ``edges`` (values outside go to the end bins), streamed."""
    counts = np.zeros(len(edges) - 1, dtype=np.int64)
    for chunk in iter_column_chunks(uri, column):
        counts += np.histogram(np.clip(chunk, edges[0], edges[-1]), edges)[0]
    return counts


def histogram_quantiles(counts: np.ndarray, edges: np.ndarray, quantiles: Sequence[float]) -> list[float]:
    """Quantiles from a histogram, linear within a bin (error at most one bin width)."""
    total = counts.sum()
    if total == 0:
        return [float("nan")] * len(quantiles)
    cdf = np.concatenate([[0], np.cumsum(counts)]) / total
    return [float(np.interp(q, cdf, edges)) for q in quantiles]


def feature_summary(uri: str) -> pd.DataFrame:
    """Global importance of every feature in an attributions file (see the module docstring).
    Two streamed passes per column: exact moments and range, then a histogram of
    ``QUANTILE_BINS`` bins for the quantiles."""
    rows = []
    for feature in attribution_features(uri):
        column = attribution_column(feature)
        stats = column_stats(uri, column)
        if stats.count and stats.high > stats.low:
            edges = np.linspace(stats.low, stats.high, QUANTILE_BINS + 1)
            quantiles = histogram_quantiles(column_histogram(uri, column, edges), edges, QUANTILES)
        else:
            quantiles = [stats.low if stats.count else float("nan")] * len(QUANTILES)
        rows.append(
            {
                "feature": feature,
                "rows": stats.count,
                "mean_abs_attribution": stats.abs_total / stats.count if stats.count else 0.0,
                "mean_attribution": stats.total / stats.count if stats.count else 0.0,
                "min": stats.low if stats.count else float("nan"),
                "max": stats.high if stats.count else float("nan"),
                **{f"q{int(q * 100):02d}": v for q, v in zip(QUANTILES, quantiles, strict=True)},
            }
        )
    frame = pd.DataFrame(rows)
    total = frame["mean_abs_attribution"].sum()
    frame["share"] = frame["mean_abs_attribution"] / total if total > 0 else 0.0
    frame["rank"] = frame["mean_abs_attribution"].rank(ascending=False, method="first").astype(np.int64)
    return frame.sort_values("rank").reset_index(drop=True)


def layer_summary(uri: str) -> pd.DataFrame:
    """Global importance of every unit of the hidden layers attributed in the run
    (``ig.layer_attributions``): mean |attribution|, mean attribution, share of its layer's
    total and rank within the layer. Empty when the run attributed no layer."""
    rows = []
    for name in open_parquet(uri).schema_arrow.names:
        parsed = parse_layer_column(name)
        if parsed is None:
            continue
        stats = column_stats(uri, name)
        rows.append(
            {
                "layer": parsed[0],
                "unit": parsed[1],
                "rows": stats.count,
                "mean_abs_attribution": stats.abs_total / stats.count if stats.count else 0.0,
                "mean_attribution": stats.total / stats.count if stats.count else 0.0,
            }
        )
    columns = ["layer", "unit", "rows", "mean_abs_attribution", "mean_attribution", "share", "rank"]
    if not rows:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(rows)
    totals = frame.groupby("layer")["mean_abs_attribution"].transform("sum")
    frame["share"] = (frame["mean_abs_attribution"] / totals.where(totals > 0)).fillna(0.0)
    frame["rank"] = (
        frame.groupby("layer")["mean_abs_attribution"].rank(ascending=False, method="first").astype(np.int64)
    )
    return frame.sort_values(["layer", "rank"]).reset_index(drop=True)[columns]


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
        scores = pa.chunked_array([read_column(attributions_uri, attribution_column(feature))])
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
    layout = SummaryLayout(output_uri)
    features = feature_summary(attributions_uri)
    outputs = {"feature_summary": layout.table("feature")}
    write_parquet(outputs["feature_summary"], pa.Table.from_pandas(features, preserve_index=False))
    result: dict[str, Any] = {
        "features": len(features),
        "rows": int(features["rows"].max()) if len(features) else 0,
    }
    if inputs_uri and categorical:
        categories = category_summary(attributions_uri, inputs_uri, categorical, id_columns or [])
        outputs["category_summary"] = layout.table("category")
        write_parquet(outputs["category_summary"], pa.Table.from_pandas(categories, preserve_index=False))
        result["categories"] = len(categories)
    layers = layer_summary(attributions_uri)
    if len(layers):
        outputs["layer_summary"] = layout.table("layer")
        write_parquet(outputs["layer_summary"], pa.Table.from_pandas(layers, preserve_index=False))
        result["layers"] = {str(k): int(v) for k, v in layers.groupby("layer").size().items()}
    result["outputs"] = outputs
    result["top_features"] = features.head(5)["feature"].tolist()
    write_json(layout.json, result)
    log.info("summarised %s: top features %s", attributions_uri, result["top_features"])
    return result
