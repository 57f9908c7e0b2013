"""Input data as it lives in a lake: one Parquet file, a directory, a glob, or a Hive-partitioned
dataset (``.../ds=2024-05-01/part-0.parquet``) on any fsspec filesystem.

:func:`open_dataset` lists the files once with ``pyarrow.dataset``, keeping only the partitions
that ``partition`` selects (partition pruning: the other files are never opened), reads each
kept file's footer for its schema and row count, and checks that the files agree on every
column's type. The result, an :class:`InputDataset`, is a small picklable description (paths,
row counts, partition values): the driver builds it once and Ray workers read their row ranges
from it, one file's row groups at a time; rows are numbered across the files in path order, so a
shard is a global row range and re-running gives the same rows in the same order. Partition keys
become columns (``ds``), as every engine that reads the dataset shows them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from ig_airflow.exceptions import ConfigError, InputDataError
from ig_airflow.io import (
    checked_text,
    filesystem,
    iter_parquet_batches,
    open_parquet,
    read_row_range,
    sha256_uri,
)

GLOB_CHARS = "*?["


@dataclass(frozen=True)
class InputDataset:
    """The files of an input dataset, in row order, with their row counts and partition values."""

    uri: str
    files: tuple[str, ...]  # fsspec URIs, sorted
    rows: tuple[int, ...]  # rows per file
    schema: pa.Schema  # file columns, then partition columns
    partition_values: tuple[dict[str, str], ...] = field(default=())  # per file: key -> value
    partition: dict[str, str] = field(default_factory=dict)  # the selection it was opened with

    @property
    def num_rows(self) -> int:
        return sum(self.rows)

    @property
    def partition_columns(self) -> list[str]:
        return list(self.partition_values[0]) if self.partition_values else []

    def _with_partition(
        self, table: pa.Table | pa.RecordBatch, index: int, columns: list[str] | None
    ) -> pa.Table:
        table = pa.Table.from_batches([table]) if isinstance(table, pa.RecordBatch) else table
        for key, value in self.partition_values[index].items() if self.partition_values else ():
            if columns is None or key in columns:
                kind = self.schema.field(key).type
                table = table.append_column(key, pa.array([value] * table.num_rows).cast(kind))
        return table.select(columns) if columns is not None else table

    def _file_columns(self, columns: list[str] | None) -> list[str] | None:
        partition = set(self.partition_columns)
        return None if columns is None else [c for c in columns if c not in partition]

    def read_rows(self, start: int, stop: int, columns: list[str] | None = None) -> pa.Table:
        """Rows ``[start, stop)`` across the files, reading only the row groups that hold them."""
        parts, offset = [], 0
        for i, (uri, n) in enumerate(zip(self.files, self.rows, strict=True)):
            if offset + n > start and offset < stop:
                local = read_row_range(
                    uri, max(start - offset, 0), min(stop - offset, n), self._file_columns(columns)
                )
                parts.append(self._with_partition(local, i, columns))
            offset += n
        if not parts:
            return self.schema.empty_table().select(columns) if columns else self.schema.empty_table()
        return pa.concat_tables(parts)

    def take(self, positions: Sequence[int], columns: list[str] | None = None) -> pa.Table:
        """The rows at sorted ``positions`` (0-based, across the files), reading only the row
        groups that hold them, one at a time (a sample of a big dataset in little memory)."""
        parts, offset = [], 0
        positions = np.asarray(positions, dtype=np.int64)
        for i, (uri, n) in enumerate(zip(self.files, self.rows, strict=True)):
            mine = positions[(positions >= offset) & (positions < offset + n)] - offset
            if len(mine):
                parts.append(
                    self._with_partition(_take_rows(uri, mine, self._file_columns(columns)), i, columns)
                )
            offset += n
        if not parts:
            return self.schema.empty_table().select(columns) if columns else self.schema.empty_table()
        return pa.concat_tables(parts)

    def iter_batches(self, batch_rows: int, columns: list[str] | None = None) -> Iterator[pa.Table]:
        """Every row in record batches of at most ``batch_rows`` rows, file after file."""
        for i, uri in enumerate(self.files):
            for batch in iter_parquet_batches(uri, batch_rows, self._file_columns(columns)):
                yield self._with_partition(batch, i, columns)

    def read_table(self, columns: list[str] | None = None) -> pa.Table:
        """All rows (or the given columns) as one table."""
        parts = [
            self._with_partition(open_parquet(uri).read(self._file_columns(columns)), i, columns)
            for i, uri in enumerate(self.files)
        ]
        return checked_text(self.uri, pa.concat_tables(parts))

    def find(self, values: Mapping[str, object], columns: list[str] | None = None) -> pa.Table:
        """The rows whose columns equal ``values`` (ids), read with predicate pushdown file by file."""
        partition = set(self.partition_columns)
        file_filters = [(k, "==", v) for k, v in values.items() if k not in partition]
        wanted_partition = {k: str(v) for k, v in values.items() if k in partition}
        parts = []
        for i, uri in enumerate(self.files):
            keys = self.partition_values[i] if self.partition_values else {}
            if any(keys.get(k) != v for k, v in wanted_partition.items()):
                continue  # another partition: not opened
            fs, path = filesystem(uri)
            wanted = self._file_columns(columns)
            table = pq.read_table(path, filesystem=fs, columns=wanted, filters=file_filters or None)
            parts.append(self._with_partition(table, i, columns))
        return (
            pa.concat_tables(parts)
            if parts
            else self.schema.empty_table().select(columns or self.schema.names)
        )

    def fingerprint(self) -> str:
        """sha256 over every file's name and bytes: a changed, added or removed file changes it."""
        if len(self.files) == 1 and self.files[0] == self.uri:
            return sha256_uri(self.uri)  # one file: its own sha256
        digest = hashlib.sha256()
        for uri in self.files:
            digest.update(f"{uri}\n{sha256_uri(uri)}\n".encode())
        return digest.hexdigest()

    def describe(self) -> dict[str, object]:
        """What a manifest records about the input."""
        return {
            "uri": self.uri,
            "partition": dict(self.partition),
            "files": len(self.files),
            "rows": self.num_rows,
        }


def _take_rows(uri: str, rows: np.ndarray, columns: list[str] | None) -> pa.Table:
    """Rows ``rows`` (sorted) of one Parquet file, row group by row group."""
    parquet = open_parquet(uri)
    starts = np.cumsum([0] + [parquet.metadata.row_group(g).num_rows for g in range(parquet.num_row_groups)])
    parts = []
    for group in np.unique(np.searchsorted(starts, rows, side="right") - 1):
        inside = rows[(rows >= starts[group]) & (rows < starts[group + 1])] - starts[group]
        parts.append(parquet.read_row_group(int(group), columns=columns).take(pa.array(inside)))
    return checked_text(uri, pa.concat_tables(parts))


def as_dataset(source: str | InputDataset) -> InputDataset:
    """``source`` opened with :func:`open_dataset` (a URI), or as it is (already open)."""
    return source if isinstance(source, InputDataset) else open_dataset(source)


def open_dataset(uri: str, partition: Mapping[str, str] | None = None) -> InputDataset:
    """List the Parquet files of ``uri`` (file, directory, glob or Hive-partitioned dataset),
    keeping the partitions whose keys equal ``partition``'s values; see the module docstring."""
    partition = {str(k): str(v) for k, v in (partition or {}).items()}
    fs, path = filesystem(uri)
    try:
        dataset = _discover(fs, path, uri)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputDataError(f"cannot read {uri} as Parquet: {exc}") from None
    expression = _partition_filter(dataset.schema, partition, uri)
    fragments = sorted(dataset.get_fragments(filter=expression), key=lambda f: f.path)
    if not fragments:
        where = f" in partition {partition}" if partition else ""
        raise InputDataError(f"{uri}: no Parquet files{where}")
    files = tuple(fs.unstrip_protocol(f.path) if _remote(fs) else f.path for f in fragments)
    footers = [open_parquet(f) for f in files]  # each file's footer, read once
    schemas = [footer.schema_arrow for footer in footers]
    _check_same_schema(files, schemas)
    values = tuple(
        {k: str(v) for k, v in pads.get_partition_keys(f.partition_expression).items()} for f in fragments
    )
    partition_fields = [dataset.schema.field(k) for k in values[0]] if values and values[0] else []
    schema = pa.schema(list(schemas[0]) + partition_fields)
    rows = tuple(footer.metadata.num_rows for footer in footers)
    return InputDataset(uri, files, rows, schema, values if partition_fields else (), partition)


def list_partitions(uri: str) -> list[dict[str, object]]:
    """The partitions of a Hive-partitioned dataset (key -> typed value), sorted, listed from the
    paths alone (no file is opened); [] for an unpartitioned one."""
    fs, path = filesystem(uri)
    try:
        dataset = _discover(fs, path, uri)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputDataError(f"cannot read {uri} as Parquet: {exc}") from None
    found = {
        tuple(sorted(pads.get_partition_keys(f.partition_expression).items()))
        for f in dataset.get_fragments()
    }
    return [dict(keys) for keys in sorted(k for k in found if k)]


def previous_partition(uri: str, partition: Mapping[str, str]) -> dict[str, str] | None:
    """The partition of ``uri`` just before ``partition`` (by its keys' typed values: dates and
    numbers in their order), or None when it is the first or not there."""
    keys = list(partition)  # in the order the run names its partition
    values = sorted({tuple(p[k] for k in keys) for p in list_partitions(uri) if all(k in p for k in keys)})
    mine = tuple(str(partition[k]) for k in keys)
    position = next((i for i, v in enumerate(values) if tuple(map(str, v)) == mine), None)
    if not position:  # the first partition, or one the dataset does not have
        return None
    return {k: str(v) for k, v in zip(keys, values[position - 1], strict=True)}


def _remote(fs: object) -> bool:
    protocol = getattr(fs, "protocol", "file")
    protocols = protocol if isinstance(protocol, tuple | list) else (protocol,)
    return not {"file", "local"} & set(protocols)


def _discover(fs: object, path: str, uri: str) -> pads.Dataset:
    if any(c in path for c in GLOB_CHARS):
        paths = sorted(p for p in fs.glob(path) if fs.isfile(p))  # type: ignore[attr-defined]
        if not paths:
            raise InputDataError(f"{uri}: the pattern matches no file")
        base = path[: min(path.index(c) for c in GLOB_CHARS if c in path)].rpartition("/")[0]
        return pads.dataset(
            paths, filesystem=fs, format="parquet", partitioning="hive", partition_base_dir=base
        )
    if not fs.exists(path):  # type: ignore[attr-defined]
        raise InputDataError(f"input not found: {uri}")
    if fs.isdir(path):  # type: ignore[attr-defined]
        return pads.dataset(path, filesystem=fs, format="parquet", partitioning="hive")
    return pads.dataset(path, filesystem=fs, format="parquet")


def _partition_filter(schema: pa.Schema, partition: dict[str, str], uri: str) -> pads.Expression | None:
    expression = None
    for key, value in partition.items():
        if key not in schema.names:
            raise ConfigError(f"data.partition: {uri} has no partition key {key!r}; columns: {schema.names}")
        try:
            typed = pa.scalar(value).cast(schema.field(key).type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise ConfigError(f"data.partition.{key}: {value!r} is not a {schema.field(key).type}") from None
        term = pads.field(key) == typed
        expression = term if expression is None else expression & term
    return expression


def _check_same_schema(files: tuple[str, ...], schemas: list[pa.Schema]) -> None:
    """Every file has the first file's columns with the same types (a clear error otherwise)."""
    first = {f.name: f.type for f in schemas[0]}
    for uri, schema in zip(files[1:], schemas[1:], strict=True):
        these = {f.name: f.type for f in schema}
        missing = [n for n in first if n not in these]
        extra = [n for n in these if n not in first]
        differs = [
            f"{n} ({first[n]} in {files[0]}, {these[n]} here)"
            for n in first
            if n in these and these[n] != first[n]
        ]
        if missing or extra or differs:
            problems = [
                *(["missing columns " + str(missing)] if missing else []),
                *(["extra columns " + str(extra)] if extra else []),
                *(["column types differ: " + "; ".join(differs)] if differs else []),
            ]
            raise InputDataError(
                f"{uri}: schema differs from the dataset's first file: {', '.join(problems)}"
            )
