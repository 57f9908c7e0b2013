"""Shards of a run: row ranges of the input, each explained into ``shards/part-NNNNN.parquet``
with a JSON record of the hashes it was computed under, so that a re-run reuses exactly the
shards whose record still matches; then committed as the run's attributions dataset.

Both runners (in process and on Ray) explain shards with :func:`explain_shard` and publish them
with :func:`commit_attributions`: every shard's file, verified against its record's checksum,
becomes ``attributions/part-NNNNN.parquet`` in a temporary folder that is renamed into place
with a ``_SUCCESS`` marker, so a reader (``pyarrow.dataset``, DuckDB, Spark, pandas) sees the
whole run or nothing. Committed files keep their shard's record, so re-running a finished run
recomputes nothing.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ig_airflow.config import RunConfig
from ig_airflow.dataset import InputDataset, open_dataset
from ig_airflow.exceptions import ConfigError, IGAirflowError
from ig_airflow.io import (
    AtomicDatasetWriter,
    dataset_complete,
    exists,
    filesystem,
    read_json,
    sha256_json,
    sha256_uri,
    write_parquet,
)
from ig_airflow.layout import RunLayout
from ig_airflow.lease import HOLDER
from ig_airflow.spec import ArtifactMetadata

if TYPE_CHECKING:
    from ig_airflow.run.explainer import BatchExplainer

log = logging.getLogger(__name__)


class ShardFailed(IGAirflowError):
    """A shard failed on every attempt, or its file no longer matches its record."""


@dataclass(frozen=True)
class Shard:
    index: int
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start

    def describe(self) -> str:
        return f"shard {self.index} (rows {self.start}-{self.stop})"


def plan_shards(n_rows: int, shard_rows: int) -> list[Shard]:
    return [
        Shard(i, start, min(start + shard_rows, n_rows))
        for i, start in enumerate(range(0, n_rows, shard_rows))
    ]


def check_shard_rows(config: RunConfig) -> None:
    """Shards must batch rows exactly as one stream of ``ig.batch_rows`` would."""
    shard_rows, batch_rows = config.ray.shard_rows, config.ig.batch_rows
    if shard_rows > batch_rows and shard_rows % batch_rows:
        raise ConfigError(
            f"ray.shard_rows ({shard_rows}) must be a multiple of ig.batch_rows "
            f"({batch_rows}) so that shards batch rows exactly as the in-process engine"
        )


def shard_hashes(config: RunConfig, metadata: ArtifactMetadata, dataset: InputDataset) -> dict[str, Any]:
    """The hashes a shard is valid under: config, artifact, input files and bytes, shard size."""
    return {
        "config_hash": config.config_hash(),
        "artifact_checksum": metadata.checksum(),
        "input_sha256": dataset.fingerprint(),
        "shard_rows": config.ray.shard_rows,
    }


@dataclass
class ShardWork:
    """What a runner computes: the ``todo`` shards of ``dataset`` under the hashes ``record``,
    adding each shard's record to ``done``; ``renew`` keeps the run folder's lease."""

    dataset: InputDataset
    todo: list[Shard]
    done: dict[int, dict[str, Any]]
    record: dict[str, Any]
    renew: Callable[[], None]


def checked_input(config: RunConfig, metadata: ArtifactMetadata) -> InputDataset:
    """The run's input, checked for the id, feature and (with ``ig.loss``) label columns."""
    from ig_airflow.run.explainer import require_columns

    dataset = open_dataset(config.data.input_uri, config.data.partition)
    labels = [config.data.label_column] if config.ig.loss and config.data.label_column else []
    require_columns(
        config.data.input_uri, dataset.schema, config.data.id_columns + metadata.inputs.feature_names + labels
    )
    return dataset


def run_in_shards(
    config: RunConfig,
    metadata: ArtifactMetadata,
    runner: str,
    compute: Callable[[ShardWork], None],
    output_schema: Callable[[pa.Schema], pa.Schema],
    **extra: Any,
) -> dict[str, Any]:
    """The IG stage for either runner, holding the run folder's lease: list the input, plan the
    shards, reuse those finished under the same hashes, ``compute`` the rest (a
    :class:`ShardWork`), commit the attributions dataset and
    write the manifest (returned). ``output_schema(input_schema)`` serves an empty input."""
    from ig_airflow.io import write_json
    from ig_airflow.lease import run_lease
    from ig_airflow.run.manifest import shards_manifest

    config.require_rendered()
    check_shard_rows(config)
    started = time.perf_counter()
    dataset = checked_input(config, metadata)
    layout = RunLayout.of(config)
    shards = plan_shards(dataset.num_rows, config.ray.shard_rows)
    with run_lease(layout) as lease:
        record = shard_hashes(config, metadata, dataset)
        done = finished_shards(layout, shards, record)
        todo = [s for s in shards if s.index not in done]
        log.info(
            "%d shards of %d rows: %d already done for these hashes, %d to compute",
            len(shards),
            config.ray.shard_rows,
            len(done),
            len(todo),
        )
        if todo:
            compute(ShardWork(dataset, todo, done, record, lease.renew))
        commit_attributions(layout, shards, done, lambda: output_schema(dataset.schema))
        manifest = shards_manifest(
            config,
            metadata,
            dataset,
            [done[s.index] for s in shards],
            computed=len(todo),
            seconds=time.perf_counter() - started,
            runner=runner,
            **extra,
        )
        write_json(layout.manifest, manifest)
    log.info(
        "wrote %s (%d rows in %d shards, %d reused, %.1f s)",
        layout.attributions,
        dataset.num_rows,
        len(shards),
        len(shards) - len(todo),
        manifest["timing"]["seconds"],
    )
    return manifest


def explain_shard(
    explainer: BatchExplainer,
    dataset: InputDataset,
    layout: RunLayout,
    shard: Shard,
    record: dict[str, Any],
    batch_rows: int,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Explain ``shard``'s rows in batches of ``batch_rows``, write them to
    ``shards/part-NNNNN.parquet`` and its record beside it; returns the record."""
    from ig_airflow.io import write_json
    from ig_airflow.run.manifest import CompletenessStats

    started = time.perf_counter()
    rows = dataset.read_rows(shard.start, shard.stop, explainer.input_columns)
    stats, tables = CompletenessStats(), []
    for batch in rows.to_batches(max_chunksize=batch_rows):
        table, result = explainer.explain(batch)
        tables.append(table)
        stats.add(result)
        if on_batch:
            on_batch(batch.num_rows)
    digest = write_parquet(layout.shard_rows(shard.index), pa.concat_tables(tables)) if tables else None
    done = {
        **record,
        "shard": shard.index,
        "rows": shard.rows,
        "sha256": digest,
        "writer": HOLDER,
        "completeness": stats.mergeable(),
        "baseline": explainer.baseline_record(),
        "baseline_source": explainer.baseline.source,
        "loss": explainer.loss_record(),
        "seconds": time.perf_counter() - started,
    }
    write_json(layout.shard_record(shard.index), done)
    return done


def shard_file(layout: RunLayout, shard: Shard) -> str | None:
    """Where ``shard``'s rows are: written and not yet committed, else in the committed dataset."""
    for uri in (layout.shard_rows(shard.index), layout.attribution_part(shard.index)):
        if exists(uri):
            return uri
    return None


def shard_problem(
    layout: RunLayout, shard: Shard, record: dict[str, Any], data: bytes | None = None
) -> str | None:
    """Why a shard's rows file (or its bytes, when the caller has read them) does not match its
    record (missing, edited, truncated), or None."""
    if not shard.rows:
        return None
    uri = shard_file(layout, shard)
    if not record.get("sha256"):
        return "its record has no checksum"
    if data is None and uri is None:
        return f"{layout.shard_rows(shard.index)} is missing"
    actual = sha256_uri(uri) if data is None else hashlib.sha256(data).hexdigest()
    if actual != record["sha256"]:
        return f"{uri} changed after it was written (sha256 {actual[:12]}, recorded {record['sha256'][:12]})"
    if record.get("rows") != shard.rows:
        return f"its record counts {record.get('rows')} rows, the shard has {shard.rows}"
    return None


def finished_shards(
    layout: RunLayout, shards: list[Shard], record: dict[str, Any]
) -> dict[int, dict[str, Any]]:
    """The records of the shards already written under the same ``record`` hashes whose rows
    file still matches its checksum; any other shard is recomputed, never committed."""
    wanted = sha256_json(record)
    done: dict[int, dict[str, Any]] = {}
    for shard in shards:
        record_uri = layout.shard_record(shard.index)
        if not exists(record_uri):
            continue
        previous = read_json(record_uri)
        if sha256_json({k: previous.get(k) for k in record}) != wanted:
            continue
        problem = shard_problem(layout, shard, previous)
        if problem:
            log.warning("%s: %s; recomputing it", shard.describe(), problem)
            continue
        done[shard.index] = previous
    return done


def commit_attributions(
    layout: RunLayout,
    shards: list[Shard],
    done: dict[int, dict[str, Any]],
    empty_schema: Callable[[], pa.Schema],
) -> None:
    """Publish every shard's rows, each verified against its record, as the run's attributions
    dataset (one ``part-NNNNN.parquet`` per shard, ``_SUCCESS``); the folder appears complete,
    by rename, or not at all. An empty input commits one empty part with the output schema."""
    written = [s for s in shards if s.rows]
    for shard in written:
        problem = shard_problem(layout, shard, done[shard.index])
        if problem:
            raise ShardFailed(f"{shard.describe()}: {problem}; it is not committed (re-run to recompute it)")
    staged = {s.index for s in written if exists(layout.shard_rows(s.index))}
    if not staged and written and dataset_complete(layout.attributions):
        return  # a finished run, re-run: its committed shards are still the ones recorded
    with AtomicDatasetWriter(layout.attributions) as dataset:
        for shard in written:
            if shard.index in staged:
                dataset.place(filesystem(layout.shard_rows(shard.index))[1], shard.index, move=True)
            else:  # committed by an earlier run under the same hashes
                dataset.place(filesystem(layout.attribution_part(shard.index))[1], shard.index, move=False)
        if not written:
            dataset.write(empty_schema().empty_table())
