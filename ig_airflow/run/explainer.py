"""Explain batches of rows with one artifact: encode, attribute (adaptive steps), and build the
output table (:mod:`ig_airflow.results`). Built once per process or Ray actor, then called on
many batches; :func:`explain_dataframe` is the notebook entry point::

    from ig_airflow import explain_dataframe
    attributions = explain_dataframe(df, "artifacts/adult_torch", id_columns=["row_id"])
"""

from __future__ import annotations

import tempfile
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ig_airflow.artifacts import LoadedArtifact, load_artifact
from ig_airflow.config import BaselineSection, IGSection, RunConfig, distribution_conflict
from ig_airflow.core.adaptive import RowAttributions, adaptive_attributions
from ig_airflow.core.baselines import Baseline, choose_baseline
from ig_airflow.core.encoding import encode_rows
from ig_airflow.core.expected import BaselinePool, ExpectedGradients, resolve_baselines
from ig_airflow.core.outputs import is_per_target, target_columns, target_label, target_setting
from ig_airflow.exceptions import ConfigError, InputDataError
from ig_airflow.results import (
    RESULT_COLUMNS,
    attribution_column,
    layer_column,
    layer_result_columns,
    output_schema,
    standard_error_column,
)
from ig_airflow.run.loss import Labels, LossExplainer


class BatchExplainer:
    """Explains batches of rows with one loaded artifact.

    Args:
        artifact: a loaded artifact (see :func:`ig_airflow.artifacts.load_artifact`).
        settings: IG settings (the run config's ``ig`` section).
        baseline: a resolved baseline row.
        id_columns: columns copied unchanged into the output.
        pool: reference rows to draw baselines from (``baseline.kind: distribution``, Expected
            Gradients; ``baseline`` is then only the pool's representative point).
        labels: the label column, for loss attributions (``ig.loss``).
    """

    def __init__(
        self,
        artifact: LoadedArtifact,
        settings: IGSection,
        baseline: Baseline,
        id_columns: list[str] | None = None,
        pool: BaselinePool | None = None,
        labels: Labels | None = None,
    ):
        if pool is not None and distribution_conflict(settings):
            raise ConfigError(distribution_conflict(settings))
        self.artifact = artifact
        self.settings = settings
        self.baseline = baseline
        self.id_columns = list(id_columns or [])
        self.spec = artifact.metadata.inputs
        self.attributor = artifact.backend.attributor(artifact.model, artifact.metadata, baseline, settings)
        self.layer_attributors = {name: self.attributor.layer(name) for name in settings.layer_attributions}
        self.expected = None if pool is None else ExpectedGradients(self.attributor, pool, settings)
        self.output = artifact.metadata.output
        self.per_target = is_per_target(target_setting(self.output, settings.target))
        self.loss = LossExplainer.of(self.attributor, artifact.metadata, settings, labels)

    @property
    def input_columns(self) -> list[str]:
        """The input columns a batch needs: ids, features and (``ig.loss``) the label column."""
        columns = [*self.id_columns, *self.spec.feature_names]
        return columns + [self.loss.column] if self.loss and self.loss.column not in columns else columns

    def table_schema(self, input_schema: pa.Schema) -> pa.Schema:
        """Schema of the output table: the id columns as typed in the input, then the
        attribution and result columns."""
        return output_schema(
            [input_schema.field(c) for c in self.id_columns],
            self.spec.feature_names,
            {name: layer.units for name, layer in self.layer_attributors.items()},
            self.per_target,
            standard_errors=self.expected is not None,
            loss=self.loss is not None,
        )

    def explain(self, batch: pa.Table | pa.RecordBatch | pd.DataFrame) -> tuple[pa.Table, RowAttributions]:
        """Explain one batch of rows; returns the output table and the raw arrays."""
        table = _as_table(batch)
        labels = [self.loss.column] if self.loss else []
        missing = [c for c in self.id_columns + labels if c not in table.column_names]
        if missing:
            raise InputDataError(f"column(s) {missing} not in the input; columns: {table.column_names}")
        numeric, categorical = encode_rows(table.select(self.spec.feature_names), self.spec)
        encoded = self.loss.encode(table) if self.loss else None
        result = self.attributions(numeric, categorical)
        n_targets = result.targets.shape[1]
        rows = pa.array(np.repeat(np.arange(len(table)), n_targets))
        columns: dict[str, Any] = {c: table.column(c).take(rows) for c in self.id_columns}
        if self.per_target:
            labels = [target_label(self.output, int(c)) for c in result.targets.reshape(-1)]
            columns["target"] = pa.array(labels, pa.string())
            columns["target_rank"] = pa.array(np.tile(np.arange(1, n_targets + 1), len(table)))
        for j, feature in enumerate(self.spec.feature_names):
            columns[attribution_column(feature)] = pa.array(result.attributions[:, j])
        for j, feature in enumerate(self.spec.feature_names if self.expected else []):
            columns[standard_error_column(feature)] = pa.array(result.standard_error[:, j])
        for name in RESULT_COLUMNS:
            columns[name] = pa.array(getattr(result, name))
        if self.loss is not None and encoded is not None:
            evaluations = self.loss.add_columns(columns, encoded, numeric, categorical, n_targets)
            result.gradient_evaluations += evaluations
        for name, layer in self.layer_attributors.items():
            at_layer = adaptive_attributions(layer, numeric, categorical, self.settings, result.targets)
            for i in range(layer.units):
                columns[layer_column(name, i)] = pa.array(at_layer.attributions[:, i])
            delta_column, steps_column = layer_result_columns(name)
            columns[delta_column] = pa.array(at_layer.delta)
            columns[steps_column] = pa.array(at_layer.n_steps)
            result.gradient_evaluations += at_layer.gradient_evaluations
        return pa.table(columns, schema=self.table_schema(table.schema)), result

    def attributions(
        self,
        numeric: np.ndarray,
        categorical: np.ndarray,
        targets: np.ndarray | None = None,
        attributor: Any = None,
    ) -> RowAttributions:
        """The attributions of encoded rows with the run's baseline settings (``attributor``: another
        model's, e.g. a randomised copy): IG, or Expected Gradients with a distribution baseline."""
        if self.expected is None:
            return adaptive_attributions(
                attributor or self.attributor, numeric, categorical, self.settings, targets
            )
        expected = (
            self.expected
            if attributor is None
            else ExpectedGradients(attributor, self.expected.pool, self.settings)
        )
        return expected.explain(numeric, categorical, targets)

    def loss_record(self) -> dict[str, Any] | None:
        """The explained loss (``ig.loss`` resolved for this model) and its labels, for manifests."""
        if self.loss is None:
            return None
        labels = self.loss.labels
        return {"kind": self.loss.loss.kind, "label_column": labels.column, "positive_label": labels.positive}

    def baseline_record(self) -> dict[str, Any]:
        """The baseline row (feature -> value) and the model's output there, for manifests: the
        explained score, or every output's score (by label) when targets vary by row. With a
        distribution baseline: how baselines are drawn, and the pool's mean output."""
        if self.expected is not None:
            return {**self.expected.record(), "prediction": self._pool_prediction()}
        if not self.per_target:
            return {**self.baseline.values, "prediction": self.attributor.baseline_prediction}
        scores = self.attributor.baseline_scores
        by_label = {target_label(self.output, j): float(v) for j, v in enumerate(scores)}
        return {**self.baseline.values, "prediction": by_label}

    def _pool_prediction(self) -> float | dict[str, float]:
        """The mean over the pool of the explained score (every output's, by label, when targets vary)."""
        scores = self.expected.pool_scores
        means = scores.mean(axis=0)
        if self.per_target:
            return {target_label(self.output, j): float(v) for j, v in enumerate(means)}
        return float(means[target_columns(self.attributor.target, self.output, scores[:1])[0, 0]])


def _as_table(batch: pa.Table | pa.RecordBatch | pd.DataFrame) -> pa.Table:
    if isinstance(batch, pa.Table):
        return batch
    if isinstance(batch, pa.RecordBatch):
        return pa.Table.from_batches([batch])
    return pa.Table.from_pandas(batch, preserve_index=False)


def require_columns(uri: str, schema: pa.Schema, columns: list[str]) -> None:
    """Raise :class:`InputDataError` naming the file and the columns it lacks."""
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise InputDataError(f"{uri}: missing column(s) {missing}")


def build_explainer(config: RunConfig, artifact: LoadedArtifact | None = None) -> BatchExplainer:
    """Load (and verify) the artifact named by ``config`` and build a :class:`BatchExplainer`."""
    artifact = artifact or load_artifact(config.model.uri, allow_pickle=config.model.allow_pickle)
    settings, source = choose_baseline(
        config.baseline, artifact.metadata.baseline, bool(config.data.reference_uri)
    )
    baseline, pool = resolve_baselines(artifact.metadata.inputs, settings, config.data.reference_uri, source)
    labels = Labels(config.data.label_column, config.data.positive_label)
    return BatchExplainer(artifact, config.ig, baseline, config.data.id_columns, pool, labels)


def explain_dataframe(
    frame: pd.DataFrame,
    artifact: str | LoadedArtifact,
    *,
    id_columns: list[str] | None = None,
    baseline: BaselineSection | dict[str, Any] | None = None,
    reference: pd.DataFrame | None = None,
    allow_pickle: bool = False,
    label_column: str | None = None,
    positive_label: Any = None,
    **ig_settings: Any,
) -> pd.DataFrame:
    """Explain the rows of ``frame`` in memory (notebook use); returns the output columns.

    Args:
        frame: rows with the model's feature columns (and ``id_columns``).
        artifact: artifact URI or an already loaded artifact.
        baseline: baseline config (default: the artifact's; without one, the median and most
            frequent values of ``reference`` when given, else zero and out-of-vocabulary).
        reference: reference rows for mean/median/most_frequent baselines.
        label_column, positive_label: the labels, for ``loss=...`` (see ``data.label_column``).
        **ig_settings: any key of the config's ``ig`` section, e.g. ``n_steps=64``.
    """
    if isinstance(artifact, str):
        artifact = load_artifact(artifact, allow_pickle=allow_pickle)
    settings = IGSection.model_validate(ig_settings)
    configured = BaselineSection.model_validate(baseline) if baseline is not None else None
    baseline_settings, source = choose_baseline(configured, artifact.metadata.baseline, reference is not None)
    reference_uri = None
    with tempfile.TemporaryDirectory() as tmp:
        if reference is not None:
            reference_uri = f"{tmp}/reference.parquet"
            reference.to_parquet(reference_uri, index=False)
        resolved, pool = resolve_baselines(artifact.metadata.inputs, baseline_settings, reference_uri, source)
    labels = Labels(label_column, positive_label)
    explainer = BatchExplainer(artifact, settings, resolved, id_columns, pool, labels)
    table, _ = explainer.explain(frame)
    return table.to_pandas()
