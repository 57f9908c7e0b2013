"""Shards of a run: row ranges of the input, each written as ``shards/part-NNNNN.parquet`` with
a JSON record of the hashes it was computed under, so that a re-run reuses exactly the shards
whose record still matches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ig_airflow.config import RunConfig
from ig_airflow.io import exists, read_json, sha256_json, sha256_uri
from ig_airflow.layout import RunLayout
from ig_airflow.spec import ArtifactMetadata


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


def shard_hashes(config: RunConfig, metadata: ArtifactMetadata) -> dict[str, Any]:
    """The hashes a shard is valid under: config, artifact, input bytes and shard size."""
    return {
        "config_hash": config.config_hash(),
        "artifact_checksum": metadata.checksum(),
        "input_sha256": sha256_uri(config.data.input_uri),
        "shard_rows": config.ray.shard_rows,
    }


def finished_shards(
    layout: RunLayout, shards: list[Shard], record: dict[str, Any]
) -> dict[int, dict[str, Any]]:
    """The records of the shards already written under the same ``record`` hashes."""
    wanted = sha256_json(record)
    done: dict[int, dict[str, Any]] = {}
    for shard in shards:
        record_uri = layout.shard_record(shard.index)
        if exists(record_uri) and (exists(layout.shard_rows(shard.index)) or shard.rows == 0):
            previous = read_json(record_uri)
            if sha256_json({k: previous.get(k) for k in record}) == wanted:
                done[shard.index] = previous
    return done
