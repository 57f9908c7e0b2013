"""The IG stage in the calling process: stream the input dataset in batches, explain each,
write ``attributions.parquet`` (renamed into place only on success) and ``manifest.json``.

Batch use (what the CLI and the Airflow operator call when ``ray.enabled`` is false)::

    manifest = run_explain(load_run_config("run.yaml"))
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ig_airflow.config import RunConfig
from ig_airflow.dataset import open_dataset
from ig_airflow.io import AtomicParquetWriter, write_json
from ig_airflow.layout import RunLayout
from ig_airflow.lease import run_lease
from ig_airflow.run.explainer import BatchExplainer, build_explainer, require_columns
from ig_airflow.run.manifest import CompletenessStats, Progress, explain_manifest

log = logging.getLogger(__name__)


def run_explain(config: RunConfig, explainer: BatchExplainer | None = None) -> dict[str, Any]:
    """Explain ``config.data.input_uri`` and write ``attributions.parquet`` and
    ``manifest.json`` under ``config.output.uri`` (holding the folder's lease); returns the
    manifest."""
    config.require_rendered()
    started = time.perf_counter()
    explainer = explainer or build_explainer(config)
    dataset = open_dataset(config.data.input_uri, config.data.partition)
    columns = explainer.id_columns + explainer.spec.feature_names
    require_columns(config.data.input_uri, dataset.schema, columns)
    layout = RunLayout.of(config)
    schema = explainer.table_schema(dataset.schema)
    stats = CompletenessStats()
    progress = Progress(dataset.num_rows, "explained {done} rows")
    with run_lease(layout) as lease:
        with AtomicParquetWriter(layout.attributions, schema) as writer:  # renamed into place on success
            for batch in dataset.iter_batches(config.ig.batch_rows, columns):
                table, result = explainer.explain(batch)
                writer.write(table.cast(schema))
                stats.add(result)
                progress.advance(batch.num_rows)
                lease.renew()
        seconds = time.perf_counter() - started
        manifest = explain_manifest(
            config,
            explainer.artifact.metadata,
            artifact_uri=explainer.artifact.uri,
            rows=progress.rows,
            baseline=explainer.baseline_record(),
            baseline_source=explainer.baseline.source,
            completeness=stats.summary(),
            seconds=seconds,
        )
        manifest["input"] = dataset.describe()
        write_json(layout.manifest, manifest)
    log.info("wrote %s (%d rows, %.1f s)", layout.attributions, progress.rows, seconds)
    return manifest
