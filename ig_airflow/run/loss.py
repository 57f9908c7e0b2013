"""The loss columns of the IG stage's output (``ig.loss`` with ``data.label_column``): each
labelled row's loss attributions, computed by :class:`~ig_airflow.core.loss.LossAttributor` with
the run's own rule and tolerance, its loss, the baseline's loss against the same label, the
completeness delta, the steps and whether it converged. Unlabelled rows (a null label), and the
rows left out by ``ig.loss_sample``, get nulls and their prediction explained as usual; a label
value that does not map to the model's output fails the run before any Ray task starts
(:meth:`LossExplainer.check_labels`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ig_airflow.config import IGSection
from ig_airflow.core.adaptive import RowAttributions, adaptive_attributions
from ig_airflow.core.attribution import InputAttributor
from ig_airflow.core.backend import Attributor
from ig_airflow.core.loss import LabelMap, LossAttributor, RowLoss, label_map, row_loss, sampled_rows
from ig_airflow.dataset import InputDataset
from ig_airflow.exceptions import ConfigError
from ig_airflow.results import LOSS_COLUMNS, loss_attribution_column
from ig_airflow.spec import ArtifactMetadata

LABEL_SCAN_ROWS = 1 << 20  # rows of the label column read at a time by the check


@dataclass(frozen=True)
class Labels:
    """Where a run's labels are: ``data.label_column`` and ``data.positive_label``."""

    column: str | None = None
    positive: Any = None


class LossExplainer:
    """Adds the loss columns to a batch's output table.

    Args:
        attributor: the run's input attributor (model, baseline, chunk size).
        metadata: the artifact's metadata (output kind, classes, calibration).
        settings: the run's ``ig`` section (``loss``, the rule and tolerance).
        labels: the label column and positive class.
    """

    def __init__(
        self, attributor: Attributor, metadata: ArtifactMetadata, settings: IGSection, labels: Labels
    ):
        if settings.loss is None or not labels.column:
            raise ConfigError("ig.loss explains each row's loss against its label; set data.label_column")
        if not isinstance(attributor, InputAttributor):
            raise ConfigError(f"ig.loss: {type(attributor).__name__} attributes no loss (vectorised engine)")
        self.attributor = attributor
        self.settings = settings
        self.features = metadata.inputs.feature_names
        n_outputs = len(attributor.baseline_scores)
        self.loss: RowLoss = row_loss(settings.loss, metadata, n_outputs, attributor.output_scale)
        self.labels: LabelMap = label_map(labels.column, self.loss, metadata, n_outputs, labels.positive)

    @classmethod
    def of(
        cls, attributor: Attributor, metadata: ArtifactMetadata, settings: IGSection, labels: Labels | None
    ) -> LossExplainer | None:
        """The loss explainer of a run with ``ig.loss``, else None."""
        if settings.loss is None:
            return None
        return cls(attributor, metadata, settings, labels or Labels())

    @property
    def column(self) -> str:
        return self.labels.column

    def check_labels(self, dataset: InputDataset) -> None:
        """Map every label of ``dataset`` (its label column only, in slices): a value that does
        not map raises :class:`~ig_airflow.exceptions.InputDataError` naming it."""
        for start in range(0, dataset.num_rows, LABEL_SCAN_ROWS):
            stop = min(start + LABEL_SCAN_ROWS, dataset.num_rows)
            values = dataset.read_rows(start, stop, [self.column]).column(0).unique()
            self.labels.encode(values.to_pylist())

    def encode(self, table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        """The batch's labels (NaN where missing) and which rows are labelled; raises on a
        label that does not map (before anything is computed)."""
        return self.labels.encode(table.column(self.column).to_pylist())

    def add_columns(
        self,
        columns: dict[str, Any],
        encoded: tuple[np.ndarray, np.ndarray],
        numeric: np.ndarray,
        categorical: np.ndarray,
        n_targets: int,
    ) -> int:
        """Add the loss columns of a batch's rows (``encoded`` labels, :meth:`encode`) to
        ``columns``, each row's values repeated on its ``n_targets`` output rows; returns the
        gradient evaluations spent."""
        labels, labelled = encoded
        rows = np.flatnonzero(labelled & sampled_rows(numeric, categorical, self.settings.loss_sample))
        result = self.attribute(numeric[rows], categorical[rows], labels[rows])
        mask = np.ones(len(labelled), dtype=bool)
        mask[rows] = False
        mask = np.repeat(mask, n_targets)

        def column(values: np.ndarray, dtype: Any = np.float64) -> pa.Array:
            full = np.zeros((len(labelled), *values.shape[1:]), dtype=dtype)
            full[rows] = values
            return pa.array(np.repeat(full, n_targets, axis=0), mask=mask)

        for j, feature in enumerate(self.features):
            columns[loss_attribution_column(feature)] = column(result.attributions[:, j])
        loss, at_baseline, delta, steps, converged = LOSS_COLUMNS
        columns[loss] = column(result.prediction)
        columns[at_baseline] = column(result.baseline_prediction)
        columns[delta] = column(result.delta)
        columns[steps] = column(result.n_steps, np.int64)
        columns[converged] = column(result.converged, np.bool_)
        return result.gradient_evaluations

    def attribute(self, numeric: np.ndarray, categorical: np.ndarray, labels: np.ndarray) -> RowAttributions:
        """The loss attributions of labelled rows (adaptive steps, the run's rule and tolerance)."""
        if not len(labels):
            none = np.zeros(0)
            return RowAttributions(
                attributions=np.zeros((0, len(self.features))),
                prediction=none,
                baseline_prediction=none,
                delta=none,
                completeness_error=none,
                n_steps=none.astype(np.int64),
                converged=none.astype(bool),
                gradient_evaluations=0,
                targets=np.zeros((0, 1), dtype=np.int64),
            )
        attributor = LossAttributor(self.attributor, self.loss, labels)
        return adaptive_attributions(attributor, numeric, categorical, self.settings)
