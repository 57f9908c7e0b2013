"""The TensorFlow / Keras 3 :class:`~ig_airflow.core.backend.FrameworkBackend`.

This module imports no tensorflow: the registry can name and list it cheaply. Its methods
import the backend's modules, which need tensorflow and keras
(``pip install 'ig-airflow[tensorflow]'``).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ig_airflow.backends import require_framework

if TYPE_CHECKING:
    from ig_airflow.config import IGSection
    from ig_airflow.core.backend import Attributor, SavedModelFile
    from ig_airflow.core.baselines import Baseline
    from ig_airflow.spec import ArtifactMetadata, InputSpec


class KerasBackend:
    """Keras models (``.keras`` files, or numeric-only SavedModels), IG by the vectorised
    engine with ``tf.GradientTape`` (``ig.engine`` has no Captum counterpart here)."""

    name = "tensorflow"
    loaders = ("keras", "savedmodel")

    def owns(self, model: Any) -> bool:
        keras = sys.modules.get("keras")  # a Keras model means keras is imported already
        return keras is not None and isinstance(model, keras.Model)

    def complete_spec(self, model: Any, spec: InputSpec) -> InputSpec:
        """What the model itself says: StringLookup vocabularies, embedding layers, input shapes."""
        from ig_airflow.backends.keras.model_inputs import complete_spec

        return complete_spec(model, spec)

    def save(
        self, model: Any, directory: Path, spec: InputSpec, loader: str | None, model_class: str | None
    ) -> SavedModelFile:
        from ig_airflow.backends.keras.artifact_io import save_keras_model

        return save_keras_model(model, directory, loader)

    def load(self, path: Path, metadata: ArtifactMetadata, allow_pickle: bool, uri: str) -> Any:
        require_framework("tensorflow", "tensorflow")
        from ig_airflow.backends.keras.artifact_io import load_keras_model

        return load_keras_model(path, metadata, allow_pickle, uri)

    def check(self, model: Any, metadata: ArtifactMetadata) -> None:
        from ig_airflow.backends.keras.adapter import KerasModelAdapter

        KerasModelAdapter(model, metadata)  # resolves the embedding layers

    def predict(
        self, model: Any, metadata: ArtifactMetadata, numeric: np.ndarray, categorical: np.ndarray
    ) -> np.ndarray:
        from ig_airflow.backends.keras.adapter import KerasModelAdapter
        from ig_airflow.core.calling import model_arrays

        adapter = KerasModelAdapter(model, metadata)
        return adapter.ops.numpy(
            adapter(*adapter.tensors(*model_arrays(metadata.inputs, numeric, categorical)))
        )

    def attributor(
        self, model: Any, metadata: ArtifactMetadata, baseline: Baseline, settings: IGSection
    ) -> Attributor:
        from ig_airflow.backends.keras.adapter import KerasModelAdapter
        from ig_airflow.core.attribution import InputAttributor

        return InputAttributor(KerasModelAdapter(model, metadata, settings.dtype), baseline, settings)

    def limit_threads(self, threads: int) -> None:
        tf = require_framework("tensorflow", "tensorflow")
        with contextlib.suppress(RuntimeError):  # only before TF's runtime starts
            tf.config.threading.set_intra_op_parallelism_threads(max(1, threads))

    @contextlib.contextmanager
    def randomised(self, model: Any, seed: int) -> Iterator[None]:
        trained = model.get_weights()
        rng = np.random.default_rng(seed)
        try:
            model.set_weights(
                [
                    (rng.standard_normal(w.shape) * (w.std() if w.size > 1 else abs(w))).astype(w.dtype)
                    if np.issubdtype(w.dtype, np.floating)
                    else w
                    for w in trained
                ]
            )
            yield
        finally:
            model.set_weights(trained)
