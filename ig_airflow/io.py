"""Storage helpers: fsspec URIs, atomic (write-then-rename) Parquet and JSON writes."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from ig_airflow.exceptions import InputDataError, StorageError


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return the fsspec filesystem and the path inside it for ``uri`` (local path or URL)."""
    fs, path = fsspec.core.url_to_fs(str(uri))
    return fs, path


def join_uri(base: str, *parts: str) -> str:
    """Join path parts onto a local path or URL."""
    base = str(base).rstrip("/")
    return "/".join([base, *[p.strip("/") for p in parts]])


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path)


ROW_GROUP_ROWS = 65_536  # readers of a row range touch at most this many extra rows


def _tmp_name(path: str) -> str:
    head, _, tail = path.rpartition("/")
    tmp = f".{tail}.tmp-{uuid.uuid4().hex[:12]}"
    return f"{head}/{tmp}" if head else tmp


def atomic_write_bytes(uri: str, data: bytes) -> None:
    """Write ``data`` to ``uri`` via a temporary name and a rename, so readers never see a
    partial file."""
    fs, path = filesystem(uri)
    parent = path.rpartition("/")[0]
    if parent:
        fs.makedirs(parent, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        with fs.open(tmp, "wb") as fh:
            fh.write(data)
        _rename(fs, tmp, path)
    except BaseException as exc:
        _remove_quietly(fs, tmp)
        if isinstance(exc, OSError):
            raise StorageError(f"cannot write {uri}: {exc.strerror or exc}") from exc
        raise


def _rename(fs: fsspec.AbstractFileSystem, tmp: str, path: str) -> None:
    if _is_local(fs):
        os.replace(tmp, path)
    else:
        fs.mv(tmp, path)


def _remove_quietly(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """Remove a temporary file after a failure, never masking the failure itself."""
    try:
        if fs.exists(path):
            fs.rm(path)
    except OSError:
        pass


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocol or "local" in protocol


def write_json(uri: str, obj: Any) -> None:
    """Atomically write ``obj`` as pretty, key-sorted JSON."""
    atomic_write_bytes(uri, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def read_json(uri: str) -> Any:
    fs, path = filesystem(uri)
    with fs.open(path, "rb") as fh:
        return json.loads(fh.read())


def write_parquet(uri: str, table: pa.Table) -> str:
    """Atomically write an Arrow table as Parquet; returns the file's sha256. The bytes depend
    only on the table, so re-running a task gives a byte-identical file."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", write_statistics=True, row_group_size=ROW_GROUP_ROWS)
    data = sink.getvalue().to_pybytes()
    atomic_write_bytes(uri, data)
    return hashlib.sha256(data).hexdigest()


def open_parquet(uri: str) -> pq.ParquetFile:
    """Open a Parquet file for streaming reads; a clear error names the file when it is
    missing or not Parquet."""
    fs, path = filesystem(uri)
    if not fs.exists(path):
        raise InputDataError(f"input file not found: {uri}")
    try:
        parquet = pq.ParquetFile(fs.open(path, "rb"))
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputDataError(f"cannot read {uri} as Parquet: {exc}") from exc
    names = parquet.schema_arrow.names
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputDataError(f"{uri}: duplicate column names {duplicates}; every column needs its own name")
    return parquet


def checked_text(uri: str, data: pa.Table | pa.RecordBatch) -> pa.Table | pa.RecordBatch:
    """``data`` after checking that its string columns hold valid UTF-8 (Parquet does not
    enforce it); a clear error names the file and column instead of a decoding traceback."""
    for name, column in zip(data.schema.names, data.columns, strict=True):
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            try:
                column.validate(full=True)
            except pa.ArrowInvalid:
                raise InputDataError(
                    f"{uri}: column {name!r} holds values that are not valid UTF-8 text"
                ) from None
    return data


def iter_parquet_batches(
    uri: str, batch_rows: int, columns: list[str] | None = None
) -> Iterator[pa.RecordBatch]:
    """Stream ``uri`` in record batches of at most ``batch_rows`` rows."""
    for batch in open_parquet(uri).iter_batches(batch_size=batch_rows, columns=columns):
        yield checked_text(uri, batch)


def read_row_range(uri: str, start: int, stop: int, columns: list[str] | None = None) -> pa.Table:
    """Rows ``[start, stop)`` of a Parquet file, reading only the row groups that hold them."""
    parquet = open_parquet(uri)
    groups, offset, first = [], 0, None
    for i in range(parquet.metadata.num_row_groups):
        n = parquet.metadata.row_group(i).num_rows
        if offset + n > start and offset < stop:
            groups.append(i)
            first = offset if first is None else first
        offset += n
    if not groups:
        return (
            parquet.schema_arrow.empty_table().select(columns)
            if columns
            else parquet.schema_arrow.empty_table()
        )
    table = parquet.read_row_groups(groups, columns=columns)
    return checked_text(uri, table.slice(start - first, stop - start))


def sha256_uri(uri: str) -> str:
    """sha256 of a file's bytes (streamed)."""
    fs, path = filesystem(uri)
    digest = hashlib.sha256()
    with fs.open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_bytes(uri: str) -> bytes:
    """A whole file's bytes."""
    fs, path = filesystem(uri)
    with fs.open(path, "rb") as fh:
        return fh.read()


def parquet_from_bytes(uri: str, data: bytes) -> pa.Table:
    """A Parquet file already read into memory (``uri`` names it in errors), checked like
    :func:`checked_text`."""
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputDataError(f"cannot read {uri} as Parquet: {exc}") from exc
    return checked_text(uri, table)


def read_parquet(uri: str, columns: list[str] | None = None) -> pa.Table:
    """A whole Parquet file (or the given columns), checked like :func:`checked_text`."""
    return checked_text(uri, open_parquet(uri).read(columns=columns))


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(obj: Any) -> str:
    """Stable hash of a JSON-serialisable object (keys sorted)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


@contextlib.contextmanager
def exclusive(uri: str, timeout_s: float = 300.0) -> Iterator[None]:
    """Hold an exclusive lock on ``uri`` (a ``<uri>.lock`` file beside it) for a
    read-modify-write: ``flock`` on local files; on other filesystems an exclusively created
    lock file, polled until free (stale after ``timeout_s``)."""
    fs, path = filesystem(uri)
    lock = f"{path}.lock"
    parent = lock.rpartition("/")[0]
    if parent:
        fs.makedirs(parent, exist_ok=True)
    if _is_local(fs):
        with open(lock, "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with fs.open(lock, "xb") as handle:
                handle.write(uuid.uuid4().hex.encode())
            break
        except FileExistsError:
            if time.monotonic() > deadline:
                _remove_quietly(fs, lock)  # a holder that died; take the lock over
                deadline = time.monotonic() + timeout_s
            time.sleep(0.05)
    try:
        yield
    finally:
        _remove_quietly(fs, lock)


@contextlib.contextmanager
def locked_json(uri: str) -> Iterator[tuple[Any, Callable[[Any], None]]]:
    """Read-modify-write a small JSON document under an exclusive lock: yields its current
    value (None when absent or unreadable) and a function that replaces it. Local files are
    locked in place (``flock`` on the file itself, which is never removed); other filesystems
    use :func:`exclusive`."""
    fs, path = filesystem(uri)
    if not _is_local(fs):
        with exclusive(uri):
            yield (read_json(uri) if fs.exists(path) else None), lambda value: write_json(uri, value)
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        handle.seek(0)
        try:
            current = json.loads(handle.read() or "null")
        except json.JSONDecodeError:
            current = None

        def replace(value: Any) -> None:
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps(value, sort_keys=True))
            handle.flush()
            os.fsync(handle.fileno())

        yield current, replace


SUCCESS_MARKER = "_SUCCESS"  # Hadoop/Spark's name for "this folder is complete"


def dataset_complete(uri: str) -> bool:
    """Whether the dataset folder ``uri`` was committed (holds ``_SUCCESS``)."""
    return exists(join_uri(uri, SUCCESS_MARKER))


class AtomicDatasetWriter:
    """Write the Parquet dataset folder ``uri`` (``part-NNNNN.parquet`` files and ``_SUCCESS``)
    so that readers see all of it or nothing: parts go to a hidden folder beside it, renamed into
    place on success (replacing an earlier folder), removed on an exception. Readers such as
    ``pyarrow.dataset``, DuckDB and Spark skip hidden and ``_`` files.

    Use as a context manager: ``write`` a table as the next part, or ``place`` an existing file.
    """

    def __init__(self, uri: str):
        self.uri = uri
        self.fs, self.path = filesystem(uri)
        parent, _, name = self.path.rpartition("/")
        for kind in ("tmp", "old"):  # left by a writer that died half-way
            for stale in self.fs.glob(f"{parent}/.{name}.{kind}-*"):
                self.fs.rm(stale, recursive=True)
        self.tmp = _tmp_name(self.path)
        self.fs.makedirs(self.tmp, exist_ok=True)
        self.parts = 0  # the next part's index

    @staticmethod
    def part_name(index: int) -> str:
        return f"part-{index:05d}.parquet"

    def write(self, table: pa.Table) -> None:
        """Write ``table`` as the next part."""
        write_parquet(self.fs.unstrip_protocol(f"{self.tmp}/{self.part_name(self.parts)}"), table)
        self.parts += 1

    def place(self, source: str, index: int, move: bool) -> None:
        """Make the file at ``source`` (a path on the same filesystem) part ``index``."""
        (self.fs.mv if move else self.fs.copy)(source, f"{self.tmp}/{self.part_name(index)}")
        self.parts = max(self.parts, index + 1)

    def __enter__(self) -> AtomicDatasetWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            with contextlib.suppress(OSError):
                self.fs.rm(self.tmp, recursive=True)
            return
        try:
            self.fs.pipe(f"{self.tmp}/{SUCCESS_MARKER}", b"")
            old = None
            if self.fs.exists(self.path):
                old = _tmp_name(self.path).replace(".tmp-", ".old-")
                self.fs.mv(self.path, old, recursive=True)
            self.fs.mv(self.tmp, self.path, recursive=True)
            if old:
                self.fs.rm(old, recursive=True)
        except OSError as failure:
            with contextlib.suppress(OSError):
                self.fs.rm(self.tmp, recursive=True)
            raise StorageError(f"cannot write {self.uri}: {failure.strerror or failure}") from failure
