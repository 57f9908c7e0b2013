"""The IG stage on Ray: sharded, resumable and fault tolerant.

The input Parquet is split into shards of ``ray.shard_rows`` rows (:mod:`ig_airflow.run.shards`).
A pool of Ray actors, each loading the model once, explains shards as they become free; each
shard is written to ``<output>/shards/part-NNNNN.parquet`` by write-then-rename, followed by a
small JSON record with the config, artifact and input hashes. A re-run (or an Airflow retry)
skips shards whose record matches and recomputes the rest. A worker process that dies is
restarted by Ray and its shard retried (``max_restarts``/``max_task_retries``); a shard that
keeps failing fails the run naming the shard and the error. When every shard is done, the
driver verifies each shard file against its record and commits them as the run's attributions
dataset (:func:`ig_airflow.run.shards.commit_attributions`, the same commit as the in-process
runner), then writes ``manifest.json``. The driver never reads the explained rows.

Embedded local Ray by default (``ray.init(num_cpus=...)``); ``ray.address`` or ``RAY_ADDRESS``
connects to an existing cluster. ``ray.gpus_per_worker`` > 0 asks for GPU workers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from ig_airflow.artifacts import read_metadata
from ig_airflow.config import RunConfig
from ig_airflow.dataset import InputDataset
from ig_airflow.exceptions import ConfigError, IGAirflowError, ModelCallError
from ig_airflow.layout import RunLayout
from ig_airflow.run.explainer import build_explainer
from ig_airflow.run.hooks import call_hook, worker_env
from ig_airflow.run.manifest import Progress
from ig_airflow.run.shards import Shard, ShardFailed, ShardWork, explain_shard, run_in_shards

log = logging.getLogger(__name__)


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


class ShardWorker:
    """A Ray actor's state: the model loaded once; explains shards and writes them."""

    def __init__(self, config_json: dict[str, Any], threads: int, dataset: InputDataset):
        from ig_airflow.core.backend import get_backend

        self.config = RunConfig.model_validate(config_json)
        get_backend(read_metadata(self.config.model.uri).framework).limit_threads(threads)
        self.explainer = build_explainer(self.config)
        self.layout = RunLayout.of(self.config)
        self.dataset = dataset  # listed once by the driver: every actor reads the same files

    def explain_shard(self, shard: Shard, record: dict[str, Any]) -> dict[str, Any]:
        call_hook("before_shard", shard.index)
        return explain_shard(
            self.explainer, self.dataset, self.layout, shard, record, self.config.ig.batch_rows
        )


def run_explain_ray(config: RunConfig) -> dict[str, Any]:
    """Explain ``config.data.input_uri`` on Ray; writes the same outputs as
    :func:`ig_airflow.run.local.run_explain` plus the per-shard files, holding the folder's
    lease. Returns the manifest."""

    def compute(work: ShardWork) -> None:
        check_first_rows(
            config, work.dataset, work.todo[0]
        )  # in the driver: a model that cannot run fails here
        ShardPool(config, work.record, work.dataset).run(
            work.todo, work.done, len(work.done) + len(work.todo), work.renew
        )

    def output_schema(input_schema: pa.Schema) -> pa.Schema:  # an empty input: the model loaded for it
        return build_explainer(config).table_schema(input_schema)

    metadata = read_metadata(config.model.uri)
    return run_in_shards(
        config, metadata, "ray", compute, output_schema, ray=config.ray.model_dump(mode="json")
    )


FIRST_ROWS = 8


def check_first_rows(config: RunConfig, dataset: InputDataset, shard: Shard) -> None:
    """Explain the first rows of ``shard`` in this process before any Ray task starts: errors
    that no retry can fix (wrong shapes, types, calling convention) fail the run at once with
    the model's own message, instead of being retried by Ray as if a worker had died."""
    explainer = build_explainer(config)
    if explainer.loss is not None:
        explainer.loss.check_labels(dataset)  # a label that does not map fails here, not in a worker
    rows = dataset.read_rows(shard.start, min(shard.stop, shard.start + FIRST_ROWS), explainer.input_columns)
    try:
        explainer.explain(rows)
    except IGAirflowError:
        raise
    except Exception as exc:  # noqa: BLE001 - the model's own error, whatever its type
        raise ModelCallError(
            f"{config.data.input_uri}: the model fails on rows {shard.start}-{shard.start + rows.num_rows} "
            f"({config.model.uri}): {type(exc).__name__}: {exc}"
        ) from None


class ShardPool:
    """Ray actors that explain shards as they become free; a dead worker is replaced and its
    shard retried up to ``ray.max_shard_attempts`` times."""

    def __init__(self, config: RunConfig, record: dict[str, Any], dataset: InputDataset):
        import ray

        self.config, self.record, self.dataset = config, record, dataset
        settings = config.ray
        self.actor = ray.remote(
            max_restarts=settings.max_restarts, max_task_retries=settings.max_task_retries
        )(ShardWorker)
        self.options: dict[str, Any] = {
            "num_cpus": settings.cpus_per_worker,
            "num_gpus": settings.gpus_per_worker,
        }
        if worker_env():  # trusted modules and run hooks reach the workers too
            self.options["runtime_env"] = {"env_vars": worker_env()}
        self.attempts: dict[int, int] = {}

    def new_worker(self) -> Any:
        threads = max(1, int(self.config.ray.cpus_per_worker))
        return self.actor.options(**self.options).remote(
            self.config.model_dump(mode="json"), threads, self.dataset
        )

    def run(
        self, todo: list[Shard], done: dict[int, dict[str, Any]], total: int, on_shard: Callable[[], None]
    ) -> None:
        """Explain ``todo``, adding each shard's record to ``done``; ``on_shard`` after each."""
        import ray

        log.info("Ray cluster resources: %s", ensure_ray(self.config))
        idle = [self.new_worker() for _ in range(min(self.config.ray.num_workers, len(todo)))]
        pending, in_flight = list(todo), {}
        progress = Progress(sum(s.rows for s in todo), "shards {done} done")
        computed = 0
        try:
            while pending or in_flight:
                while idle and pending:
                    worker, shard = idle.pop(), pending.pop(0)
                    in_flight[worker.explain_shard.remote(shard, self.record)] = (shard, worker)
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                shard, worker = in_flight.pop(ready[0])
                if not self._collect(ready[0], shard, worker, done):
                    idle.append(self.new_worker())
                    pending.insert(0, shard)
                    continue
                idle.append(worker)
                computed += 1
                progress.advance(shard.rows, f"{len(done)}/{total}")
                on_shard()
                call_hook("after_shards", computed)
        finally:
            for worker in idle + [w for _, w in in_flight.values()]:
                ray.kill(worker, no_restart=True)

    def _collect(self, ref: Any, shard: Shard, worker: Any, done: dict[int, dict[str, Any]]) -> bool:
        """Store a finished shard's record; False when its worker died and it must be retried."""
        import ray

        try:
            done[shard.index] = ray.get(ref)
            return True
        except ray.exceptions.RayTaskError as exc:
            raise ShardFailed(f"{shard.describe()} failed: {exc.cause!r}") from None
        except ray.exceptions.RayActorError as exc:
            self.attempts[shard.index] = self.attempts.get(shard.index, 0) + 1
            if self.attempts[shard.index] >= self.config.ray.max_shard_attempts:
                raise ShardFailed(
                    f"{shard.describe()} failed {self.attempts[shard.index]} time(s), its worker died: {exc}"
                ) from None
            log.warning("worker died on shard %d (%s); retrying on a fresh worker", shard.index, exc)
            ray.kill(worker, no_restart=True)
            return False
