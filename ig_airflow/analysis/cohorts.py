"""Cohorts and the explained input rows of a run.

A cohort (``cohorts`` in the run config, :class:`ig_airflow.config.CohortSection`) cuts the
explained rows into segments by one input column: one segment per value of a categorical
column (its most frequent values; the rest ``(other)``), or per bin of a numeric one; rows
with no value form ``(missing)``. The column is read from the rows the run explained (the
validated rows, found through the run's manifest), which line up one to one with the
attributions (with each row's first target in a multi-target run).

:func:`cohort_summary` writes ``cohort_summary.parquet``: per cohort, segment and feature, the
rows, mean |attribution| (with its 95% bootstrap interval), mean attribution, share of the
segment's total and rank within the segment. Segments partition the rows, so for each cohort
the segments' rows add up to the run's and their means, weighted by rows, to the global means.

The same pass (:func:`scan_attributions`) feeds the drift stage's per-segment comparison, and
:func:`input_block_histograms` its input drift (the inputs of drift impact).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ig_airflow.analysis.aggregation import (
    ColumnStats,
    Source,
    Where,
    attribution_features,
    iter_column_chunks,
    primary_rows,
)
from ig_airflow.analysis.statistics import (
    add_block_counts,
    bin_codes,
    block_count,
    block_rows,
    interval,
    poisson_weights,
    ranks,
    shares,
)
from ig_airflow.config import CohortSection
from ig_airflow.dataset import InputDataset, as_dataset, open_dataset
from ig_airflow.exceptions import InputDataError
from ig_airflow.io import exists, read_json, write_json, write_parquet
from ig_airflow.layout import RunLayout, SummaryLayout, explained_input
from ig_airflow.results import attribution_column

MISSING, OTHER = "(missing)", "(other)"
MAX_INPUT_CATEGORIES = 50  # input drift of a categorical feature: its most frequent values, the rest "other"


@dataclass
class Segments:
    """A cohort's segments: their labels and each explained row's segment (an index into them)."""

    cohort: CohortSection
    labels: list[str]
    codes: np.ndarray

    @classmethod
    def of(cls, cohort: CohortSection, columns: Sequence[pa.ChunkedArray]) -> list[Segments]:
        """The segments of ``cohort`` in each of ``columns`` (one run's input column each), with
        labels shared by all (a categorical column's most frequent values over all of them)."""
        if cohort.bins is not None:
            cuts = np.asarray(cohort.bins, dtype=np.float64)
            labels = [f"< {cuts[0]:g}"]
            labels += [f"[{a:g}, {b:g})" for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
            labels += [f">= {cuts[-1]:g}", MISSING]
            return [cls(cohort, labels, _numeric_codes(column, cuts)) for column in columns]
        strings = [pc.cast(column, pa.string()) for column in columns]
        counts = pa.chunked_array([c for s in strings for c in s.chunks], pa.string()).value_counts()
        ranked = sorted(
            ((c["counts"], c["values"]) for c in counts.to_pylist() if c["values"] is not None),
            key=lambda item: (-item[0], item[1]),
        )
        labels = [value for _, value in ranked[: cohort.max_values]] + [OTHER, MISSING]
        return [cls(cohort, labels, _category_codes(s, labels)) for s in strings]


def _numeric_codes(column: pa.ChunkedArray, cuts: np.ndarray) -> np.ndarray:
    values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
    codes = np.searchsorted(cuts, values, side="right")
    codes[np.isnan(values)] = len(cuts) + 1
    return codes.astype(np.int64)


def _category_codes(column: pa.ChunkedArray, labels: list[str]) -> np.ndarray:
    known = labels[:-2]
    index = pc.index_in(column, value_set=pa.array(known, pa.string())).to_numpy(zero_copy_only=False)
    codes = np.where(np.isnan(index.astype(np.float64)), len(known), index).astype(np.int64)
    codes[pc.is_null(column).to_numpy(zero_copy_only=False)] = len(known) + 1
    return codes


def run_manifest(uri: str) -> tuple[str, dict[str, Any]] | None:
    """The run folder of ``uri`` (a run folder or its ``attributions/``) and its manifest; None
    without one."""
    uri = str(uri).rstrip("/")
    for folder in (uri, uri.rpartition("/")[0]):
        if folder and exists(RunLayout(folder).manifest):
            return folder, read_json(RunLayout(folder).manifest)
    return None


def explained_inputs(attributions_uri: str) -> InputDataset | None:
    """The rows a run explained, from the manifest of the run whose attributions these are (the
    run folder or its ``attributions/``): the validated rows when it validated, else its input
    with the partition it read; None without a manifest."""
    found = run_manifest(attributions_uri)
    if found is None:
        return None
    try:
        uri, partition = explained_input(found[1])
    except KeyError:  # neither validated rows nor an input recorded
        return None
    return open_dataset(uri, partition)


def check_aligned(inputs: InputDataset, attributions: Source, where: Where) -> None:
    """The inputs hold the explained rows in the attributions' order (one per attribution row,
    or per first-target row): same count, same values in every column both have (the ids)."""
    attributions = as_dataset(attributions)
    ids = [n for n in attributions.schema.names if n in inputs.schema.names]
    explained = attributions.read_table([*ids, *([where[0]] if where else [])])
    if where:
        explained = explained.filter(pc.equal(explained.column(where[0]), where[1]))
    if explained.num_rows != inputs.num_rows:
        raise InputDataError(
            f"{inputs.uri} has {inputs.num_rows} rows but {attributions.uri} explains {explained.num_rows}"
        )
    for column in ids:
        if not explained.column(column).equals(inputs.read_table([column]).column(0)):
            raise InputDataError(f"column {column!r} differs between {inputs.uri} and {attributions.uri}")


@dataclass
class SegmentSums:
    """Per block of rows and segment: the rows and, per feature, the sum of |attribution|
    (``features x blocks x segments``) and the signed sum per segment (``features x segments``)."""

    segments: Segments
    block: int
    counts: np.ndarray
    abs_sums: np.ndarray
    sums: np.ndarray

    @classmethod
    def empty(cls, segments: Segments, features: int, block: int) -> SegmentSums:
        n, width = len(segments.codes), len(segments.labels)
        counts = np.zeros((block_count(n, block), width))
        add_block_counts(counts, segments.codes, 0, block)
        return cls(
            segments, block, counts, np.zeros((features, len(counts), width)), np.zeros((features, width))
        )

    def add(self, feature: int, values: np.ndarray, offset: int) -> None:
        codes = self.segments.codes[offset : offset + len(values)]
        add_block_counts(self.abs_sums[feature], codes, offset, self.block, np.abs(values))
        self.sums[feature] += np.bincount(codes, weights=values, minlength=self.sums.shape[1])

    def rows(self) -> np.ndarray:
        return self.counts.sum(axis=0)

    def importance(self) -> np.ndarray:
        """Mean |attribution| per segment and feature (``segments x features``)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return (self.abs_sums.sum(axis=1) / self.rows()).T

    def replicates(self, weights: np.ndarray) -> np.ndarray:
        """Mean |attribution| per resample, segment and feature (``resamples x segments x features``);
        ``weights``' blocks: these sums' blocks."""
        features, blocks, width = self.abs_sums.shape
        sums = (weights @ self.abs_sums.transpose(1, 2, 0).reshape(blocks, -1)).reshape(-1, width, features)
        with np.errstate(invalid="ignore", divide="ignore"):
            return sums / (weights @ self.counts)[..., None]


def scan_attributions(
    dataset: InputDataset, features: list[str], where: Where, block: int, segments: Sequence[Segments] = ()
) -> tuple[list[ColumnStats], list[SegmentSums]]:
    """One streamed pass over each feature's attribution column: its exact statistics with
    per-block |attribution| sums, and each cohort's per-block, per-segment sums."""
    stats, sums = [], [SegmentSums.empty(s, len(features), block) for s in segments]
    for i, feature in enumerate(features):
        column, offset = ColumnStats(block=block), 0
        for chunk in iter_column_chunks(dataset, attribution_column(feature), where):
            column.add(chunk)
            for cohort in sums:
                cohort.add(i, chunk, offset)
            offset += len(chunk)
        stats.append(column)
    return stats, sums


def read_input_column(inputs: InputDataset, column: str) -> pa.ChunkedArray:
    if column not in inputs.schema.names:
        raise InputDataError(f"cohort column {column!r} is not in the explained rows {inputs.uri}")
    return inputs.read_table([column]).column(0)


def cohort_summary(
    attributions: Source,
    inputs: InputDataset,
    cohorts: Sequence[CohortSection],
    resamples: int = 0,
    seed: int = 0,
) -> pd.DataFrame:
    """Importance per cohort and segment (see the module docstring), over each explained row's
    first target; ``resamples`` > 0 adds the 95% bootstrap interval of the mean |attribution|."""
    dataset = as_dataset(attributions)
    where = primary_rows(dataset)
    check_aligned(inputs, dataset, where)
    features = attribution_features(dataset)
    segments = [Segments.of(c, [read_input_column(inputs, c.column)])[0] for c in cohorts]
    block = block_rows(inputs.num_rows)
    _, sums = scan_attributions(dataset, features, where, block, segments)
    frames = [_cohort_frame(s, features, resamples, seed) for s in sums]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _cohort_frame(sums: SegmentSums, features: list[str], resamples: int, seed: int) -> pd.DataFrame:
    rows, importance = sums.rows(), sums.importance()
    keep = np.flatnonzero(rows > 0)
    share, rank = shares(importance[keep]), ranks(importance[keep])
    frame = pd.DataFrame(
        {
            "cohort": sums.segments.cohort.column,
            "segment": np.repeat([sums.segments.labels[s] for s in keep], len(features)),
            "feature": np.tile(features, len(keep)),
            "rows": np.repeat(rows[keep].astype(np.int64), len(features)),
            "mean_abs_attribution": importance[keep].ravel(),
            "mean_attribution": (sums.sums[:, keep] / rows[keep]).T.ravel(),
            "share": share.ravel(),
            "rank": rank.ravel(),
        }
    )
    if resamples:
        weights = poisson_weights(np.random.default_rng(seed), resamples, len(sums.counts))
        low, high = interval(sums.replicates(weights)[:, keep])
        frame["mean_abs_ci_low"], frame["mean_abs_ci_high"] = low.ravel(), high.ravel()
    order = {label: i for i, label in enumerate(sums.segments.labels)}  # by frequency, or bin by bin
    return frame.sort_values(
        ["segment", "rank"], key=lambda c: c.map(order) if c.name == "segment" else c
    ).reset_index(drop=True)


def input_block_histograms(
    reference: InputDataset, current: InputDataset, column: str, bins: int, blocks: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """An input column of both runs as per-block histograms (``blocks x bins`` each, the runs'
    ``blocks`` rows per block) on shared bins: a numeric column's ``bins`` quantile bins of the
    reference (fewer where values repeat), a categorical column's most frequent values (over
    both runs) with ``(other)``; ``(missing)`` last in both. Returns the two and the bins' labels."""
    columns = [reference.read_table([column]).column(0), current.read_table([column]).column(0)]
    if pa.types.is_integer(columns[0].type) or pa.types.is_floating(columns[0].type):
        values = [pc.cast(c, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64) for c in columns]
        known = values[0][~np.isnan(values[0])]
        cuts = np.unique(np.quantile(known, np.linspace(0, 1, bins + 1)[1:-1])) if len(known) else np.zeros(0)
        edges = np.concatenate([[-np.inf], cuts, [np.inf]])
        labels = [f"< {cuts[0]:g}"] if len(cuts) else ["all"]
        labels += [f"[{a:g}, {b:g})" for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
        labels += [f">= {cuts[-1]:g}"] if len(cuts) else []
        codes = [np.where(np.isnan(v), len(labels), bin_codes(np.nan_to_num(v), edges)) for v in values]
        labels.append(MISSING)
    else:
        cohort = CohortSection(column=column, max_values=MAX_INPUT_CATEGORIES)
        segments = Segments.of(cohort, columns)
        labels, codes = segments[0].labels, [s.codes for s in segments]
    histograms = []
    for run_codes, block in zip(codes, blocks, strict=True):
        counts = np.zeros((block_count(len(run_codes), block), len(labels)))
        add_block_counts(counts, run_codes.astype(np.int64), 0, block)
        histograms.append(counts)
    return histograms[0], histograms[1], labels


def summarise_cohorts(
    attributions_uri: str,
    output_uri: str,
    inputs: InputDataset,
    cohorts: Sequence[CohortSection],
    resamples: int = 0,
    seed: int = 0,
) -> dict[str, object]:
    """Write ``cohort_summary.parquet`` under ``output_uri`` (the summary folder, after
    :func:`ig_airflow.analysis.aggregation.summarise_run`) and add to ``summary.json`` each
    cohort's segments with their rows (``cohorts``) and the table (``outputs``); returns it."""
    layout = SummaryLayout(output_uri)
    frame = cohort_summary(attributions_uri, inputs, cohorts, resamples, seed)
    write_parquet(layout.table("cohort"), pa.Table.from_pandas(frame, preserve_index=False))
    result = read_json(layout.json) if exists(layout.json) else {"outputs": {}}
    result["cohorts"] = {str(c.column): {} for c in cohorts}
    for row in frame.drop_duplicates(["cohort", "segment"]).itertuples(index=False) if len(frame) else ():
        result["cohorts"][str(row.cohort)][str(row.segment)] = int(row.rows)
    result["outputs"]["cohort_summary"] = layout.table("cohort")
    write_json(layout.json, result)
    return result
