"""The IG stage in the calling process: explain the input dataset shard by shard (the same
shards, records and commit as on Ray, :mod:`ig_airflow.run.shards`), then write the attributions
dataset and ``manifest.json``. A re-run reuses the shards already written under the same hashes.

Batch use (what the CLI and the Airflow operator call when ``ray.enabled`` is false)::

    manifest = run_explain(load_run_config("run.yaml"))
"""

from __future__ import annotations

import logging
from typing import Any

from ig_airflow.config import RunConfig
from ig_airflow.layout import RunLayout
from ig_airflow.run.explainer import BatchExplainer, build_explainer
from ig_airflow.run.manifest import Progress
from ig_airflow.run.shards import ShardWork, explain_shard, run_in_shards

log = logging.getLogger(__name__)


def run_explain(config: RunConfig, explainer: BatchExplainer | None = None) -> dict[str, Any]:
    """Explain ``config.data.input_uri`` and write the attributions dataset and ``manifest.json``
    under ``config.output.uri`` (holding the folder's lease); returns the manifest."""
    explainer = explainer or build_explainer(config)
    layout = RunLayout.of(config)

    def compute(work: ShardWork) -> None:
        if explainer.loss is not None:
            explainer.loss.check_labels(work.dataset)
        progress = Progress(sum(s.rows for s in work.todo), "explained {done} rows")

        def on_batch(rows: int) -> None:
            progress.advance(rows)
            work.renew()

        for shard in work.todo:
            work.done[shard.index] = explain_shard(
                explainer, work.dataset, layout, shard, work.record, config.ig.batch_rows, on_batch
            )

    return run_in_shards(config, explainer.artifact.metadata, "local", compute, explainer.table_schema)
