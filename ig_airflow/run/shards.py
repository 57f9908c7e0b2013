"""Shards of a run: row ranges of the input, each written as ``shards/part-NNNNN.parquet`` with
a JSON record of the hashes it was computed under, so that a re-run reuses exactly the shards
whose record still matches."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from ig_airflow.config import RunConfig
from ig_airflow.dataset import InputDataset
from ig_airflow.io import exists, read_json, sha256_json, sha256_uri
from ig_airflow.layout import RunLayout
from ig_airflow.spec import ArtifactMetadata

log = logging.getLogger(__name__)


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


def shard_hashes(config: RunConfig, metadata: ArtifactMetadata, dataset: InputDataset) -> dict[str, Any]:
    """The hashes a shard is valid under: config, artifact, input files and bytes, shard size."""
    return {
        "config_hash": config.config_hash(),
        "artifact_checksum": metadata.checksum(),
        "input_sha256": dataset.fingerprint(),
        "shard_rows": config.ray.shard_rows,
    }


def shard_problem(
    layout: RunLayout, shard: Shard, record: dict[str, Any], data: bytes | None = None
) -> str | None:
    """Why a shard's rows file (or its bytes, when the caller has read them) does not match its
    record (missing, edited, truncated), or None."""
    if not shard.rows:
        return None
    uri = layout.shard_rows(shard.index)
    if not record.get("sha256"):
        return "its record has no checksum"
    if data is None and not exists(uri):
        return f"{uri} is missing"
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
    file still matches its checksum; any other shard is recomputed, never merged."""
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
