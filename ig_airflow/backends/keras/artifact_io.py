"""Keras model files in an artifact: ``.keras`` files loaded with ``safe_mode=True`` (no
lambdas; custom layers must be registered by the importable module named in
``custom_objects_module``), and TensorFlow SavedModels for numeric-only models (input-level
attribution)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from ig_airflow.core.backend import SavedModelFile
from ig_airflow.exceptions import ArtifactError
from ig_airflow.spec import ArtifactMetadata
from ig_airflow.trust import require_trusted


def save_keras_model(model: Any, directory: Path, loader: str | None) -> SavedModelFile:
    """Save a Keras model as ``model.keras`` (default) or a SavedModel directory."""
    loader = loader or "keras"
    if loader == "keras":
        model.save(directory / "model.keras")
        return SavedModelFile("keras", "model.keras")
    if loader == "savedmodel":
        model.export(str(directory / "saved_model"))
        return SavedModelFile("savedmodel", "saved_model")
    raise ArtifactError(f"unknown TensorFlow loader {loader!r}")


def load_keras_model(path: Path, metadata: ArtifactMetadata, allow_code: bool, uri: str) -> Any:
    """Load the verified ``.keras`` file (``safe_mode``) or, with ``allow_code``, the SavedModel
    directory at ``path``."""
    if metadata.custom_objects_module:
        require_trusted(metadata.custom_objects_module, "custom_objects_module", uri)
        try:
            importlib.import_module(metadata.custom_objects_module)
        except ImportError as exc:
            raise ArtifactError(f"{uri}: cannot import custom_objects_module: {exc}") from None
    if metadata.loader == "savedmodel":
        if metadata.inputs.categorical:
            raise ArtifactError(
                f"{uri}: a SavedModel supports input-level attribution only; categorical features "
                f"{metadata.inputs.categorical_names} need a .keras model for embedding attribution"
            )
        if not allow_code:
            raise ArtifactError(
                f"{uri}: a TensorFlow SavedModel is a graph whose ops run when it is called (they can "
                "read and write files); set model.allow_pickle: true in the run config only if you "
                "trust its source, or save the model as .keras"
            )
        return tf.saved_model.load(str(path))
    try:
        return keras.models.load_model(str(path), safe_mode=True, compile=False)
    except (TypeError, ValueError) as exc:
        missing = sorted(set(re.findall(r"Could not locate class '([^']+)'", str(exc))))
        message = f"unregistered class(es) {missing}" if missing else str(exc).split("\n")[0]
        raise ArtifactError(
            f"{uri}: cannot load {path.name} with safe_mode=True: {message}. Register custom layers "
            "with @keras.saving.register_keras_serializable in a module named by custom_objects_module"
        ) from None
