"""The IG stage on Ray: sharded, resumable and fault tolerant.

The input Parquet is split into shards of ``ray.shard_rows`` rows. A pool of Ray actors, each
loading the model once, explains shards as they become free; each shard is written to
``<output>/shards/part-NNNNN.parquet`` by write-then-rename, followed by a small JSON record
with the config, artifact and input hashes. A re-run (or an Airflow retry) skips shards whose
record matches and recomputes the rest. A worker process that dies is restarted by Ray and
its shard retried (``max_restarts``/``max_task_retries``); a shard that keeps failing fails
the run naming the shard and the error. When every shard is done, the shards are streamed
into ``attributions.parquet`` (the same file the in-process engine writes) and
``manifest.json``. The driver never holds more than one shard.

Embedded local Ray by default (``ray.init(num_cpus=...)``); ``ray.address`` or ``RAY_ADDRESS``
connects to an existing cluster. ``ray.gpus_per_worker`` > 0 asks for GPU workers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ig_airflow.config import RunConfig
from ig_airflow.exceptions import ConfigError, IGAirflowError
from ig_airflow.faults import ENV as FAULT_ENV
from ig_airflow.io import (
    AtomicParquetWriter,
    exists,
    join_uri,
    open_parquet,
    read_json,
    read_parquet,
    sha256_json,
    sha256_uri,
    write_json,
)

log = logging.getLogger(__name__)


class ShardFailed(IGAirflowError):
    """A shard failed on every attempt."""


@dataclass(frozen=True)
class Shard:
    index: int
    start: int
    stop: int

    @property
    def name(self) -> str:
        return f"part-{self.index:05d}"


def plan_shards(n_rows: int, shard_rows: int) -> list[Shard]:
    return [
        Shard(i, start, min(start + shard_rows, n_rows))
        for i, start in enumerate(range(0, n_rows, shard_rows))
    ]


def shards_uri(config: RunConfig) -> str:
    return join_uri(config.output.uri, "shards")


def ensure_ray(config: RunConfig) -> dict[str, Any]:
    """Connect to ``ray.address`` / ``RAY_ADDRESS``, or start an embedded local Ray."""
    import ray

    settings = config.ray
    if not ray.is_initialized():
        address = settings.address or os.environ.get("RAY_ADDRESS")
        if address:
            log.info("connecting to the Ray cluster at %s", address)
            ray.init(address=address, log_to_driver=True)
        else:
            num_cpus = settings.num_cpus or os.cpu_count() or 1
            log.info("starting an embedded local Ray with %d CPUs", num_cpus)
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=True)
    resources = ray.cluster_resources()
    if settings.gpus_per_worker > 0 and resources.get("GPU", 0) < settings.gpus_per_worker:
        raise ConfigError(
            f"ray.gpus_per_worker={settings.gpus_per_worker} but the Ray cluster has "
            f"{resources.get('GPU', 0)} GPU(s)"
        )
    return resources


def _worker_class(config: RunConfig) -> Any:
    import ray

    @ray.remote(max_restarts=config.ray.max_restarts, max_task_retries=config.ray.max_task_retries)
    class ExplainWorker:
        """Loads the model once; explains shards and writes them."""

        def __init__(self, config_json: dict[str, Any], threads: int):
            from ig_airflow.artifacts import read_metadata
            from ig_airflow.config import RunConfig
            from ig_airflow.explain import build_explainer

            self.config = RunConfig.model_validate(config_json)
            if read_metadata(self.config.model.uri).framework == "tensorflow":
                import tensorflow as tf

                with contextlib.suppress(RuntimeError):  # only before TF's runtime starts
                    tf.config.threading.set_intra_op_parallelism_threads(max(1, threads))
            else:
                import torch

                torch.set_num_threads(max(1, threads))
            self.explainer = build_explainer(self.config)

        def explain_shard(self, shard: Shard, record: dict[str, Any]) -> dict[str, Any]:
            from ig_airflow.explain import CompletenessStats, baseline_record
            from ig_airflow.faults import maybe_kill_worker
            from ig_airflow.io import read_row_range, write_parquet

            maybe_kill_worker(shard.index)
            started = time.perf_counter()
            columns = self.explainer.id_columns + self.explainer.spec.feature_names
            rows = read_row_range(self.config.data.input_uri, shard.start, shard.stop, columns)
            stats = CompletenessStats()
            tables = []
            for batch in rows.to_batches(max_chunksize=self.config.ig.batch_rows):
                table, result = self.explainer.explain(batch)
                tables.append(table)
                stats.add(result)
            output = pa.concat_tables(tables) if tables else None
            base = join_uri(shards_uri(self.config), shard.name)
            if output is not None:
                write_parquet(f"{base}.parquet", output)
            done = {
                **record,
                "shard": shard.index,
                "rows": shard.stop - shard.start,
                "completeness": shard_completeness(stats),
                "baseline": baseline_record(self.explainer),
                "seconds": time.perf_counter() - started,
            }
            write_json(f"{base}.json", done)
            return done

    return ExplainWorker


def run_explain_ray(config: RunConfig) -> dict[str, Any]:
    """Explain ``config.data.input_uri`` on Ray; writes the same outputs as
    :func:`ig_airflow.explain.run_explain` plus the per-shard files. Returns the manifest."""
    import ray

    from ig_airflow.artifacts import read_metadata
    from ig_airflow.explain import require_columns, versions
    from ig_airflow.faults import maybe_fail_run

    config.require_rendered()
    settings = config.ray
    if settings.shard_rows > config.ig.batch_rows and settings.shard_rows % config.ig.batch_rows:
        raise ConfigError(
            f"ray.shard_rows ({settings.shard_rows}) must be a multiple of ig.batch_rows "
            f"({config.ig.batch_rows}) so that shards batch rows exactly as the in-process engine"
        )
    started = time.perf_counter()
    metadata = read_metadata(config.model.uri)
    parquet = open_parquet(config.data.input_uri)
    require_columns(
        config.data.input_uri, parquet.schema_arrow, metadata.inputs.feature_names + config.data.id_columns
    )
    n_rows = parquet.metadata.num_rows
    shards = plan_shards(n_rows, settings.shard_rows)
    record = {
        "config_hash": config.config_hash(),
        "artifact_checksum": metadata.checksum(),
        "input_sha256": sha256_uri(config.data.input_uri),
        "shard_rows": settings.shard_rows,
    }
    record_hash = sha256_json(record)
    done: dict[int, dict[str, Any]] = {}
    for shard in shards:
        base = join_uri(shards_uri(config), shard.name)
        if exists(f"{base}.json") and (exists(f"{base}.parquet") or shard.start == shard.stop):
            previous = read_json(f"{base}.json")
            if sha256_json({k: previous.get(k) for k in record}) == record_hash:
                done[shard.index] = previous
    skipped = len(done)
    todo = [s for s in shards if s.index not in done]
    log.info(
        "%d shards of %d rows: %d already done for these hashes, %d to compute",
        len(shards),
        settings.shard_rows,
        skipped,
        len(todo),
    )

    if todo:
        resources = ensure_ray(config)
        n_workers = min(settings.num_workers, len(todo))
        log.info("Ray cluster resources: %s; %d workers", resources, n_workers)
        worker_cls = _worker_class(config)
        options: dict[str, Any] = {"num_cpus": settings.cpus_per_worker, "num_gpus": settings.gpus_per_worker}
        if os.environ.get(FAULT_ENV):  # resilience tests: the workers see the injected fault too
            options["runtime_env"] = {"env_vars": {FAULT_ENV: os.environ[FAULT_ENV]}}
        config_json = config.model_dump(mode="json")
        threads = max(1, int(settings.cpus_per_worker))

        def new_worker() -> Any:
            return worker_cls.options(**options).remote(config_json, threads)

        idle = [new_worker() for _ in range(n_workers)]
        pending = list(todo)
        attempts: dict[int, int] = {}
        in_flight: dict[Any, tuple[Shard, Any]] = {}
        computed_rows = 0
        compute_started = time.perf_counter()
        try:
            while pending or in_flight:
                while idle and pending:
                    worker, shard = idle.pop(), pending.pop(0)
                    in_flight[worker.explain_shard.remote(shard, record)] = (shard, worker)
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                shard, worker = in_flight.pop(ready[0])
                try:
                    done[shard.index] = ray.get(ready[0])
                except ray.exceptions.RayTaskError as exc:
                    raise ShardFailed(
                        f"shard {shard.index} (rows {shard.start}-{shard.stop}) failed: {exc.cause!r}"
                    ) from None
                except ray.exceptions.RayActorError as exc:
                    attempts[shard.index] = attempts.get(shard.index, 0) + 1
                    if attempts[shard.index] >= settings.max_shard_attempts:
                        raise ShardFailed(
                            f"shard {shard.index} (rows {shard.start}-{shard.stop}) failed "
                            f"{attempts[shard.index]} time(s), its worker died: {exc}"
                        ) from None
                    log.warning("worker died on shard %d (%s); retrying on a fresh worker", shard.index, exc)
                    ray.kill(worker, no_restart=True)
                    idle.append(new_worker())
                    pending.insert(0, shard)
                    continue
                idle.append(worker)
                computed_rows += shard.stop - shard.start
                elapsed = time.perf_counter() - compute_started
                rate = computed_rows / elapsed if elapsed else float("nan")
                left = sum(s.stop - s.start for s in pending) + sum(
                    s.stop - s.start for s, _ in in_flight.values()
                )
                log.info(
                    "shards %d/%d done (%.0f rows/s, about %.0f s left)",
                    len(done),
                    len(shards),
                    rate,
                    left / rate if rate else float("nan"),
                )
                maybe_fail_run(len(done) - skipped)
        finally:
            for worker in idle + [w for _, w in in_flight.values()]:
                ray.kill(worker, no_restart=True)

    output_uri = join_uri(config.output.uri, "attributions.parquet")
    with AtomicParquetWriter(output_uri, _output_schema(config, shards, parquet.schema_arrow)) as writer:
        for shard in shards:
            if shard.start < shard.stop:  # one shard in memory at a time
                writer.write(read_parquet(join_uri(shards_uri(config), f"{shard.name}.parquet")))
    seconds = time.perf_counter() - started
    manifest = {
        "stage": "explain",
        "runner": "ray",
        "config_hash": record["config_hash"],
        "artifact": {
            "uri": config.model.uri,
            "checksum": record["artifact_checksum"],
            "files": metadata.files,
            "framework": metadata.framework,
            "loader": metadata.loader,
        },
        "input_uri": config.data.input_uri,
        "input_sha256": record["input_sha256"],
        "outputs": {"attributions": output_uri, "shards": shards_uri(config)},
        "id_columns": config.data.id_columns,
        "rows": {"explained": n_rows},
        "baseline": done[shards[0].index].get("baseline") if shards else None,
        "shards": {"total": len(shards), "skipped": skipped, "computed": len(shards) - skipped},
        "ig": config.ig.model_dump(mode="json"),
        "ray": settings.model_dump(mode="json"),
        "completeness": merge_completeness([done[s.index]["completeness"] for s in shards]),
        "timing": {
            "seconds": round(seconds, 3),
            "rows_per_second": round(n_rows / seconds, 1) if seconds else None,
        },
        "versions": versions(),
    }
    write_json(join_uri(config.output.uri, "manifest.json"), manifest)
    log.info(
        "wrote %s (%d rows in %d shards, %d skipped, %.1f s)",
        output_uri,
        n_rows,
        len(shards),
        skipped,
        seconds,
    )
    return manifest


def shard_completeness(stats: Any) -> dict[str, Any]:
    """Per-shard completeness summary that merges exactly (sum, max) or as a bound (p95)."""
    errors = np.concatenate(stats.errors) if stats.errors else np.zeros(0)
    return {
        "rows": int(len(errors)),
        "error_sum": float(errors.sum()),
        "max_error": float(errors.max()) if len(errors) else 0.0,
        "p95_error": float(np.quantile(errors, 0.95)) if len(errors) else 0.0,
        "unconverged_rows": stats.unconverged,
        "gradient_evaluations": stats.gradient_evaluations,
    }


def merge_completeness(parts: list[dict[str, Any]]) -> dict[str, Any]:
    rows = sum(p["rows"] for p in parts)
    return {
        "rows": rows,
        "mean_error": sum(p["error_sum"] for p in parts) / rows if rows else 0.0,
        "max_error": max((p["max_error"] for p in parts), default=0.0),
        "p95_error_max_over_shards": max((p["p95_error"] for p in parts), default=0.0),
        "unconverged_rows": sum(p["unconverged_rows"] for p in parts),
        "gradient_evaluations": sum(p["gradient_evaluations"] for p in parts),
    }


def _output_schema(config: RunConfig, shards: list[Shard], input_schema: pa.Schema) -> pa.Schema:
    for shard in shards:
        if shard.start < shard.stop:
            return open_parquet(join_uri(shards_uri(config), f"{shard.name}.parquet")).schema_arrow
    from ig_airflow.explain import build_explainer  # empty input: no shard to read it from

    return build_explainer(config).table_schema(input_schema)
