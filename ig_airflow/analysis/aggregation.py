"""Aggregate attributions: feature-level and category-level (feature=value) summaries.

Categorical attributions arrive already summed over their embedding dimensions (one score per
feature, see :mod:`ig_airflow.core.attribution`). This stage summarises a run:

- ``feature_summary.parquet``: per feature, mean |attribution|, mean signed attribution, share
  of the total mean |attribution|, rank, and quantiles (5/25/50/75/95%) of the attribution,
  with 95% bootstrap intervals of the mean |attribution|, the share and the rank
  (``mean_abs_ci_low``/``_high``, ``share_ci_*``, ``rank_ci_*``; :mod:`.statistics`);
- ``cohort_summary.parquet`` (with ``cohorts`` in the config): the same per segment of the rows
  (:mod:`.cohorts`);
- ``category_summary.parquet``: per categorical feature and value, row count, mean and mean
  |attribution| of that feature's score;
- ``layer_summary.parquet`` (runs with ``ig.layer_attributions``): per hidden layer and unit,
  mean |attribution|, mean attribution, share of the layer's total and rank in the layer.

A multi-target run (a ``target`` column: a list, ``predicted`` or ``top_k``) is summarised per
target: the feature and category summaries gain a ``target`` column.

Columns are streamed one column chunk (row group) at a time: means, ranges and counts are
exact, quantiles come from a 4,096-bin histogram (error at most one bin width), so a run of
any length is summarised in memory proportional to one column chunk. The intervals come from
per-block sums kept in the same pass (a Poisson bootstrap on at most 2,048 row blocks), never
from resampled copies of the rows. Category summaries read one categorical column and its
attribution column at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ig_airflow.analysis.statistics import (
    LEVEL,
    add_block_counts,
    add_block_sums,
    bin_codes,
    block_count,
    block_rows,
    interval,
    poisson_weights,
    ranks,
    resampled_means,
    shares,
)
from ig_airflow.dataset import InputDataset, as_dataset, open_dataset
from ig_airflow.exceptions import InputDataError
from ig_airflow.io import ROW_GROUP_ROWS, exists, read_json, write_json, write_parquet
from ig_airflow.layout import RunLayout, SummaryLayout
from ig_airflow.results import (
    ATTRIBUTION_PREFIX,
    RANK_COLUMN,
    TARGET_COLUMN,
    attribution_column,
    parse_layer_column,
)
from ig_airflow.results import attribution_features as feature_columns

log = logging.getLogger(__name__)
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
QUANTILE_BINS = 4096


Source = str | InputDataset  # an attributions dataset: its URI (folder or file), or already open


def attribution_features(source: Source) -> list[str]:
    dataset = as_dataset(source)
    features = feature_columns(dataset.schema.names)
    if not features:
        raise InputDataError(
            f"{dataset.uri}: no {ATTRIBUTION_PREFIX}<feature> columns; is it an attributions dataset?"
        )
    return features


def open_attributions(uri: str) -> InputDataset:
    """The attributions of ``uri``: a run folder (the dataset its manifest names), an
    attributions dataset folder, or one attributions file (runs written before datasets)."""
    manifest = RunLayout(uri).manifest
    if exists(manifest):
        uri = read_json(manifest)["outputs"]["attributions"]
    return open_dataset(uri)


Where = tuple[str, Any] | None  # keep only the rows whose column equals the value


def iter_column_chunks(source: Source, column: str, where: Where = None) -> Iterator[np.ndarray]:
    """A column, one row group's worth at a time, file after file, as float64;
    ``where=(name, value)`` keeps the rows where column ``name`` equals ``value`` (one target of
    a multi-target run)."""
    columns = [column] if where is None else [column, where[0]]
    for table in as_dataset(source).iter_batches(ROW_GROUP_ROWS, columns):
        if where is not None:
            table = table.filter(pc.equal(table.column(1), pa.scalar(where[1], table.schema.field(1).type)))
        yield table.column(0).to_numpy(zero_copy_only=False).astype(np.float64)


def read_column(source: Source, column: str, where: Where = None) -> np.ndarray:
    """A whole column as float64 (for small files and per-row views such as plots)."""
    parts = list(iter_column_chunks(source, column, where))
    return np.concatenate(parts) if parts else np.zeros(0)


def run_targets(source: Source) -> list[str]:
    """The targets of a multi-target run (a ``target`` column), most explained first; [] otherwise."""
    dataset = as_dataset(source)
    if TARGET_COLUMN not in dataset.schema.names:
        return []
    counts = dataset.read_table([TARGET_COLUMN]).column(0).value_counts().to_pylist()
    return [c["values"] for c in sorted(counts, key=lambda c: (-c["counts"], c["values"]))]


def primary_rows(source: Source) -> Where:
    """Each row's first target in a multi-target run (``target_rank == 1``: the first listed,
    or the predicted class): what a single-target view (drift, report) looks at."""
    names = as_dataset(source).schema.names
    return (RANK_COLUMN, 1) if RANK_COLUMN in names else None


@dataclass
class ColumnStats:
    """Exact streaming statistics of one column; with ``block`` > 0 also the sum of |values|
    per block of ``block`` consecutive rows (:mod:`.statistics`)."""

    count: int = 0
    total: float = 0.0
    abs_total: float = 0.0
    low: float = np.inf
    high: float = -np.inf
    block: int = 0
    block_abs: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def add(self, values: np.ndarray) -> None:
        if len(values):
            absolute = np.abs(values)
            if self.block:
                needed = block_count(self.count + len(values), self.block)
                if needed > len(self.block_abs):
                    grown = np.zeros(max(needed, 2 * len(self.block_abs)))
                    grown[: len(self.block_abs)] = self.block_abs
                    self.block_abs = grown
                add_block_sums(self.block_abs, absolute, self.count, self.block)
            self.count += len(values)
            self.total += float(values.sum())
            self.abs_total += float(absolute.sum())
            self.low = min(self.low, float(values.min()))
            self.high = max(self.high, float(values.max()))

    @property
    def blocks(self) -> int:
        return block_count(self.count, self.block) if self.block and self.count else 0

    def block_counts(self) -> np.ndarray:
        """Rows per block (all ``block`` but the last)."""
        counts = np.full(self.blocks, float(self.block))
        if len(counts):
            counts[-1] = self.count - (len(counts) - 1) * self.block
        return counts


def column_stats(source: Source, column: str, where: Where = None, block: int = 0) -> ColumnStats:
    stats = ColumnStats(block=block)
    for chunk in iter_column_chunks(source, column, where):
        stats.add(chunk)
    return stats


def column_histogram(source: Source, column: str, edges: np.ndarray, where: Where = None) -> np.ndarray:
    """Counts of a column on ``edges`` (values outside go to the end bins), streamed."""
    counts = np.zeros(len(edges) - 1, dtype=np.int64)
    for chunk in iter_column_chunks(source, column, where):
        counts += np.histogram(np.clip(chunk, edges[0], edges[-1]), edges)[0]
    return counts


def column_block_histogram(
    source: Source, column: str, edges: np.ndarray, block: int, blocks: int, where: Where = None
) -> np.ndarray:
    """Counts of a column on ``edges`` per block of ``block`` rows: ``blocks x bins``, streamed."""
    counts = np.zeros((blocks, len(edges) - 1))
    offset = 0
    for chunk in iter_column_chunks(source, column, where):
        add_block_counts(counts, bin_codes(chunk, edges), offset, block)
        offset += len(chunk)
    return counts


def histogram_quantiles(counts: np.ndarray, edges: np.ndarray, quantiles: Sequence[float]) -> list[float]:
    """Quantiles from a histogram, linear within a bin (error at most one bin width)."""
    total = counts.sum()
    if total == 0:
        return [float("nan")] * len(quantiles)
    cdf = np.concatenate([[0], np.cumsum(counts)]) / total
    return [float(np.interp(q, cdf, edges)) for q in quantiles]


def feature_summary(source: Source, where: Where = None, resamples: int = 0, seed: int = 0) -> pd.DataFrame:
    """Global importance of every feature in an attributions dataset (see the module docstring).
    Two streamed passes per column: exact moments, range and per-block sums, then a histogram of
    ``QUANTILE_BINS`` bins for the quantiles. ``where`` restricts it to one target's rows;
    ``resamples`` > 0 adds the bootstrap intervals (seeded by ``seed``)."""
    dataset, rows, stats = as_dataset(source), [], []
    block = block_rows(dataset.num_rows) if resamples else 0  # per-block sums only when resampled
    for feature in attribution_features(dataset):
        column = attribution_column(feature)
        stats.append(column_stats(dataset, column, where, block))
        rows.append({"feature": feature, **_column_row(dataset, column, stats[-1], where)})
    frame = pd.DataFrame(rows)
    total = frame["mean_abs_attribution"].sum()
    frame["share"] = frame["mean_abs_attribution"] / total if total > 0 else 0.0
    frame["rank"] = frame["mean_abs_attribution"].rank(ascending=False, method="first").astype(np.int64)
    if resamples and len(frame) and stats[0].count:
        replicates = importance_replicates(
            stats, poisson_weights(np.random.default_rng(seed), resamples, stats[0].blocks)
        )
        for name, values in (
            ("mean_abs", replicates),
            ("share", shares(replicates)),
            ("rank", ranks(replicates)),
        ):
            low, high = interval(values)
            frame[f"{name}_ci_low"], frame[f"{name}_ci_high"] = low, high
    return frame.sort_values("rank").reset_index(drop=True)


def _column_row(dataset: InputDataset, column: str, stats: ColumnStats, where: Where) -> dict[str, Any]:
    if stats.count and stats.high > stats.low:
        edges = np.linspace(stats.low, stats.high, QUANTILE_BINS + 1)
        counts = column_histogram(dataset, column, edges, where)
        quantiles = histogram_quantiles(counts, edges, QUANTILES)
    else:
        quantiles = [stats.low if stats.count else float("nan")] * len(QUANTILES)
    return {
        "rows": stats.count,
        "mean_abs_attribution": stats.abs_total / stats.count if stats.count else 0.0,
        "mean_attribution": stats.total / stats.count if stats.count else 0.0,
        "min": stats.low if stats.count else float("nan"),
        "max": stats.high if stats.count else float("nan"),
        **{f"q{int(q * 100):02d}": v for q, v in zip(QUANTILES, quantiles, strict=True)},
    }


def importance_replicates(stats: Sequence[ColumnStats], weights: np.ndarray) -> np.ndarray:
    """Mean |attribution| of each feature (columns summarised together, per-block sums kept) in
    each bootstrap resample: ``resamples x features``."""
    sums = np.stack([s.block_abs[: s.blocks] for s in stats], axis=1)
    return resampled_means(weights, sums, stats[0].block_counts())


def layer_summary(source: Source) -> pd.DataFrame:
    """Global importance of every unit of the hidden layers attributed in the run
    (``ig.layer_attributions``): mean |attribution|, mean attribution, share of its layer's
    total and rank within the layer. Empty when the run attributed no layer."""
    dataset, rows = as_dataset(source), []
    for name in dataset.schema.names:
        parsed = parse_layer_column(name)
        if parsed is None:
            continue
        stats = column_stats(dataset, name)
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
    attributions_uri: Source,
    inputs_uri: str,
    categorical: list[str],
    id_columns: list[str],
    inputs_partition: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Mean attribution per categorical feature and value (and per target in a multi-target
    run). ``inputs_uri`` holds the explained rows in the same order as the attributions (the
    validated file; each row repeated once per target in the attributions); ids are checked."""
    inputs = open_dataset(inputs_uri, inputs_partition)
    attributions = as_dataset(attributions_uri)
    attributions_uri = attributions.uri
    n_inputs, n_rows = inputs.num_rows, attributions.num_rows
    targets = run_targets(attributions)
    per_row = n_rows // n_inputs if n_inputs and n_rows % n_inputs == 0 else 0
    if n_rows != n_inputs and not (targets and per_row):
        raise InputDataError(
            f"{inputs_uri} has {n_inputs} rows but {attributions_uri} has {n_rows}; they must be the "
            "same explained rows"
        )
    rows = pa.array(np.repeat(np.arange(n_inputs), max(per_row, 1)))
    for column in id_columns:
        explained = inputs.read_table(columns=[column]).column(0).take(rows)
        if not pc.all(pc.equal(explained, attributions.read_table([column]).column(0))).as_py():
            raise InputDataError(f"id column {column!r} differs between {inputs_uri} and {attributions_uri}")
    keys = ["target", "value"] if targets else ["value"]
    frames = []
    for feature in categorical:
        values = pc.cast(inputs.read_table(columns=[feature]).column(0).take(rows), pa.string())
        scores = pa.chunked_array([read_column(attributions, attribution_column(feature))])
        table = pa.table({"value": values, "attribution": scores})
        if targets:
            table = table.append_column("target", attributions.read_table([TARGET_COLUMN]).column(0))
        table = table.append_column("abs_attribution", pc.abs(table.column("attribution")))
        grouped = (
            table.group_by(keys)
            .aggregate([("attribution", "count"), ("attribution", "mean"), ("abs_attribution", "mean")])
            .to_pandas()
        )
        grouped.columns = [*keys, "rows", "mean_attribution", "mean_abs_attribution"]
        grouped.insert(0, "feature", feature)
        frames.append(grouped)
    columns = ["feature", *keys, "rows", "mean_attribution", "mean_abs_attribution"]
    if not frames:
        return pd.DataFrame(columns=columns)
    result = pd.concat(frames, ignore_index=True)[columns]
    order = ["feature", *keys[:-1], "mean_abs_attribution"]
    return result.sort_values(order, ascending=[True] * (len(order) - 1) + [False]).reset_index(drop=True)


def run_feature_summary(uri: Source, targets: list[str], resamples: int = 0, seed: int = 0) -> pd.DataFrame:
    """:func:`feature_summary`, per target (a ``target`` column first) when the run has
    ``targets`` (:func:`run_targets`)."""
    if not targets:
        return feature_summary(uri, resamples=resamples, seed=seed)
    frames = [feature_summary(uri, (TARGET_COLUMN, t), resamples, seed).assign(target=t) for t in targets]
    frame = pd.concat(frames, ignore_index=True)
    return frame[["target", *[c for c in frame.columns if c != "target"]]]


def summarise_run(
    attributions_uri: str,
    output_uri: str,
    inputs_uri: str | None = None,
    categorical: list[str] | None = None,
    id_columns: list[str] | None = None,
    inputs_partition: dict[str, str] | None = None,
    resamples: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """Write ``feature_summary.parquet`` (with ``resamples`` > 0 its bootstrap intervals) and
    ``category_summary.parquet`` (when the inputs and categorical features are given) under
    ``output_uri``; returns their URIs and counts (also in ``summary.json``). Cohorts:
    :func:`ig_airflow.analysis.cohorts.summarise_cohorts`."""
    layout = SummaryLayout(output_uri)
    attributions = open_dataset(attributions_uri)  # listed once, read column by column
    targets = run_targets(attributions)
    summary = run_feature_summary(attributions, targets, resamples, seed)
    outputs = {"feature_summary": layout.table("feature")}
    write_parquet(outputs["feature_summary"], pa.Table.from_pandas(summary, preserve_index=False))
    features = feature_summary(attributions, primary_rows(attributions)) if targets else summary
    result: dict[str, Any] = {
        "features": len(features),
        "rows": int(features["rows"].max()) if len(features) else 0,
    }
    if resamples:
        result["intervals"] = {"resamples": resamples, "seed": seed, "level": LEVEL}
    if targets:
        result["targets"] = targets
    if inputs_uri and categorical:
        categories = category_summary(
            attributions, inputs_uri, categorical, id_columns or [], inputs_partition
        )
        outputs["category_summary"] = layout.table("category")
        write_parquet(outputs["category_summary"], pa.Table.from_pandas(categories, preserve_index=False))
        result["categories"] = len(categories)
    layers = layer_summary(attributions)
    if len(layers):
        outputs["layer_summary"] = layout.table("layer")
        write_parquet(outputs["layer_summary"], pa.Table.from_pandas(layers, preserve_index=False))
        result["layers"] = {str(k): int(v) for k, v in layers.groupby("layer").size().items()}
    result["outputs"] = outputs
    result["top_features"] = features.head(5)["feature"].tolist()
    write_json(layout.json, result)
    log.info("summarised %s: top features %s", attributions_uri, result["top_features"])
    return result
