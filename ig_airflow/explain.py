"""The IG stage as a library: explain a Parquet file (or a DataFrame) with a saved model.

Notebook use::

    from ig_airflow import explain_dataframe
    attributions = explain_dataframe(df, "artifacts/adult_torch", id_columns=["row_id"])

Batch use (what the CLI and the Airflow operator call)::

    manifest = run_explain(load_run_config("run.yaml"))

Output columns: the id columns, ``attr__<feature>`` for every input feature (categorical
features summed over their embedding dimensions), ``prediction``, ``baseline_prediction``,
``delta`` (sum of attributions minus the prediction change), ``completeness_error``
(``|delta| / |prediction - baseline_prediction|``), ``n_steps`` and ``converged``; for each
layer in ``ig.layer_attributions``: ``layer__<layer>__<unit>`` per unit of its output,
``layer_delta__<layer>`` and ``layer_n_steps__<layer>``.
"""

from __future__ import annotations

import logging
import platform
import time
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ig_airflow.artifacts import LoadedArtifact, load_artifact
from ig_airflow.baselines import Baseline, resolve_baseline
from ig_airflow.config import BaselineSection, IGSection, RunConfig
from ig_airflow.engine import RowAttributions, explain_rows
from ig_airflow.exceptions import InputDataError
from ig_airflow.io import AtomicParquetWriter, join_uri, open_parquet, write_json
from ig_airflow.model_wrapper import encode_rows

log = logging.getLogger(__name__)

ATTRIBUTION_PREFIX = "attr__"
RESULT_COLUMNS = [
    "prediction",
    "baseline_prediction",
    "delta",
    "completeness_error",
    "n_steps",
    "converged",
]


LAYER_PREFIX = "layer__"


def attribution_column(feature: str) -> str:
    return f"{ATTRIBUTION_PREFIX}{feature}"


def layer_column(layer: str, unit: int) -> str:
    """Column of one unit of a hidden layer's attributions (``ig.layer_attributions``)."""
    return f"{LAYER_PREFIX}{layer}__{unit}"


def layer_result_columns(layer: str) -> tuple[str, str]:
    """Columns of a hidden layer's completeness delta and final step count."""
    return f"layer_delta__{layer}", f"layer_n_steps__{layer}"


class Explainer:
    """Everything needed to explain batches with one artifact: built once (per process or
    Ray actor), then called on many batches.

    Args:
        artifact: a loaded artifact (see :func:`ig_airflow.artifacts.load_artifact`).
        settings: IG settings (the run config's ``ig`` section).
        baseline: a resolved baseline row.
        id_columns: columns copied unchanged into the output.
    """

    def __init__(
        self,
        artifact: LoadedArtifact,
        settings: IGSection,
        baseline: Baseline,
        id_columns: list[str] | None = None,
    ):
        self.artifact = artifact
        self.settings = settings
        self.baseline = baseline
        self.id_columns = list(id_columns or [])
        self.spec = artifact.metadata.inputs
        self.backend = self._backend()
        self.layer_backends = {name: self.backend.layer(name) for name in settings.layer_attributions}

    def _backend(self) -> Any:
        meta = self.artifact.metadata
        if meta.framework == "pytorch":
            import torch

            from ig_airflow.ig_torch import TorchIG, resolve_device
            from ig_airflow.model_wrapper import TorchModelWrapper

            dtype = torch.float64 if self.settings.dtype == "float64" else torch.float32
            wrapper = TorchModelWrapper(
                self.artifact.model, meta, dtype=dtype, device=resolve_device(self.settings.device)
            )
            return TorchIG(wrapper, self.baseline, self.settings)
        from ig_airflow.tf_backend import TensorFlowIG

        return TensorFlowIG(self.artifact.model, meta, self.baseline, self.settings)

    @property
    def output_schema(self) -> pa.Schema:
        return pa.schema(
            [pa.field(attribution_column(f), pa.float64()) for f in self.spec.feature_names]
            + [
                pa.field("prediction", pa.float64()),
                pa.field("baseline_prediction", pa.float64()),
                pa.field("delta", pa.float64()),
                pa.field("completeness_error", pa.float64()),
                pa.field("n_steps", pa.int64()),
                pa.field("converged", pa.bool_()),
            ]
            + [
                field
                for name, layer in self.layer_backends.items()
                for field in [
                    *[pa.field(layer_column(name, i), pa.float64()) for i in range(layer.units)],
                    pa.field(layer_result_columns(name)[0], pa.float64()),
                    pa.field(layer_result_columns(name)[1], pa.int64()),
                ]
            ]
        )

    def table_schema(self, input_schema: pa.Schema) -> pa.Schema:
        """Schema of the output table: the id columns as typed in the input, then the
        attribution and result columns."""
        return pa.schema([input_schema.field(c) for c in self.id_columns] + list(self.output_schema))

    def explain(self, batch: pa.Table | pa.RecordBatch | pd.DataFrame) -> tuple[pa.Table, RowAttributions]:
        """Explain one batch of rows; returns the output table and the raw arrays."""
        table = (
            batch
            if isinstance(batch, pa.Table)
            else (
                pa.Table.from_batches([batch])
                if isinstance(batch, pa.RecordBatch)
                else pa.Table.from_pandas(batch, preserve_index=False)
            )
        )
        missing = [c for c in self.id_columns if c not in table.column_names]
        if missing:
            raise InputDataError(f"id column(s) {missing} not in the input; columns: {table.column_names}")
        numeric, categorical = encode_rows(table.select(self.spec.feature_names), self.spec)
        result = explain_rows(self.backend, numeric, categorical, self.settings)
        columns: dict[str, Any] = {c: table.column(c) for c in self.id_columns}
        for j, feature in enumerate(self.spec.feature_names):
            columns[attribution_column(feature)] = pa.array(result.attributions[:, j])
        for name in RESULT_COLUMNS:
            columns[name] = pa.array(getattr(result, name))
        for name, layer in self.layer_backends.items():
            at_layer = explain_rows(layer, numeric, categorical, self.settings)
            for i in range(layer.units):
                columns[layer_column(name, i)] = pa.array(at_layer.attributions[:, i])
            delta_column, steps_column = layer_result_columns(name)
            columns[delta_column] = pa.array(at_layer.delta)
            columns[steps_column] = pa.array(at_layer.n_steps)
            result.gradient_evaluations += at_layer.gradient_evaluations
        return pa.table(columns, schema=self.table_schema(table.schema)), result


def require_columns(uri: str, schema: pa.Schema, columns: list[str]) -> None:
    """Raise :class:`InputDataError` naming the file and the columns it lacks."""
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise InputDataError(f"{uri}: missing column(s) {missing}")


def effective_baseline(config: RunConfig, artifact: LoadedArtifact) -> BaselineSection:
    """The run config's baseline when it sets one, else the artifact's default."""
    return config.baseline if config.baseline is not None else artifact.metadata.baseline


def build_explainer(config: RunConfig, artifact: LoadedArtifact | None = None) -> Explainer:
    """Load (and verify) the artifact named by ``config`` and build an :class:`Explainer`."""
    artifact = artifact or load_artifact(config.model.uri, allow_pickle=config.model.allow_pickle)
    baseline = resolve_baseline(
        artifact.metadata.inputs, effective_baseline(config, artifact), config.data.reference_uri
    )
    return Explainer(artifact, config.ig, baseline, config.data.id_columns)


class CompletenessStats:
    """Running summary of completeness over batches (mean, max, unconverged count)."""

    def __init__(self) -> None:
        self.errors: list[np.ndarray] = []
        self.unconverged = 0
        self.gradient_evaluations = 0

    def add(self, result: RowAttributions) -> None:
        self.errors.append(result.completeness_error)
        self.unconverged += int((~result.converged).sum())
        self.gradient_evaluations += result.gradient_evaluations

    def summary(self) -> dict[str, Any]:
        errors = np.concatenate(self.errors) if self.errors else np.zeros(0)
        if not len(errors):
            return {"rows": 0, "unconverged_rows": 0, "gradient_evaluations": 0}
        return {
            "rows": int(len(errors)),
            "mean_error": float(errors.mean()),
            "p95_error": float(np.quantile(errors, 0.95)),
            "max_error": float(errors.max()),
            "unconverged_rows": self.unconverged,
            "gradient_evaluations": self.gradient_evaluations,
        }


def run_explain(config: RunConfig, explainer: Explainer | None = None) -> dict[str, Any]:
    """Explain ``config.data.input_uri`` and write ``attributions.parquet`` and
    ``manifest.json`` under ``config.output.uri``; returns the manifest."""
    config.require_rendered()
    started = time.perf_counter()
    explainer = explainer or build_explainer(config)
    parquet = open_parquet(config.data.input_uri)
    total = parquet.metadata.num_rows
    require_columns(
        config.data.input_uri, parquet.schema_arrow, explainer.spec.feature_names + explainer.id_columns
    )
    output_uri = join_uri(config.output.uri, "attributions.parquet")
    schema = explainer.table_schema(parquet.schema_arrow)
    stats = CompletenessStats()
    done = 0
    with AtomicParquetWriter(output_uri, schema) as writer:  # renamed into place only on success
        for batch in parquet.iter_batches(
            batch_size=config.ig.batch_rows, columns=explainer.id_columns + explainer.spec.feature_names
        ):
            table, result = explainer.explain(batch)
            writer.write(table.cast(schema))
            stats.add(result)
            done += batch.num_rows
            elapsed = time.perf_counter() - started
            rate = done / elapsed if elapsed else float("nan")
            log.info(
                "explained %d/%d rows (%.0f rows/s, about %.0f s left)",
                done,
                total,
                rate,
                (total - done) / rate if rate else float("nan"),
            )
    seconds = time.perf_counter() - started
    manifest = run_manifest(config, explainer, stats, done, seconds, output_uri)
    write_json(join_uri(config.output.uri, "manifest.json"), manifest)
    log.info("wrote %s (%d rows, %.1f s)", output_uri, done, seconds)
    return manifest


def run_manifest(
    config: RunConfig,
    explainer: Explainer,
    stats: CompletenessStats,
    rows: int,
    seconds: float,
    output_uri: str,
) -> dict[str, Any]:
    meta = explainer.artifact.metadata
    return {
        "stage": "explain",
        "config_hash": config.config_hash(),
        "artifact": {
            "uri": explainer.artifact.uri,
            "checksum": explainer.artifact.checksum,
            "files": meta.files,
            "framework": meta.framework,
            "loader": meta.loader,
        },
        "input_uri": config.data.input_uri,
        "outputs": {"attributions": output_uri},
        "id_columns": explainer.id_columns,
        "rows": {"explained": rows},
        "baseline": baseline_record(explainer),
        "ig": config.ig.model_dump(mode="json"),
        "completeness": stats.summary(),
        "timing": {
            "seconds": round(seconds, 3),
            "rows_per_second": round(rows / seconds, 1) if seconds else None,
        },
        "versions": versions(),
    }


def baseline_record(explainer: Explainer) -> dict[str, Any]:
    """The baseline row (feature -> value) and the model's output there, for manifests."""
    return {**explainer.baseline.values, "prediction": explainer.backend.baseline_prediction}


def versions() -> dict[str, str]:
    import ig_airflow

    return {"ig_airflow": ig_airflow.__version__, "python": platform.python_version()}


def explain_dataframe(
    frame: pd.DataFrame,
    artifact: str | LoadedArtifact,
    *,
    id_columns: list[str] | None = None,
    baseline: BaselineSection | dict[str, Any] | None = None,
    reference: pd.DataFrame | None = None,
    allow_pickle: bool = False,
    **ig_settings: Any,
) -> pd.DataFrame:
    """Explain the rows of ``frame`` in memory (notebook use); returns the output columns.

    Args:
        frame: rows with the model's feature columns (and ``id_columns``).
        artifact: artifact URI or an already loaded artifact.
        baseline: baseline config (defaults to the artifact's).
        reference: reference rows for mean/median/most_frequent baselines.
        **ig_settings: any key of the config's ``ig`` section, e.g. ``n_steps=64``.
    """
    import tempfile

    if isinstance(artifact, str):
        artifact = load_artifact(artifact, allow_pickle=allow_pickle)
    settings = IGSection.model_validate(ig_settings)
    baseline_cfg = (
        BaselineSection.model_validate(baseline) if baseline is not None else artifact.metadata.baseline
    )
    reference_uri = None
    with tempfile.TemporaryDirectory() as tmp:
        if reference is not None:
            reference_uri = f"{tmp}/reference.parquet"
            reference.to_parquet(reference_uri, index=False)
        resolved = resolve_baseline(artifact.metadata.inputs, baseline_cfg, reference_uri)
    explainer = Explainer(artifact, settings, resolved, id_columns)
    table, _ = explainer.explain(frame)
    return table.to_pandas()
