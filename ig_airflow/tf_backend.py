"""TensorFlow / Keras 3 backend: artifacts, the model wrapper and vectorised IG with
``tf.GradientTape``.

Convention, as for PyTorch: ``model([x_num, x_cat])`` with ``x_num`` float32
``[batch, n_numeric]`` and ``x_cat`` int32 ``[batch, n_categorical]``, returning logits
``[batch]``, ``[batch, 1]`` or ``[batch, n_outputs]``. The output is selected and calibrated
exactly as for PyTorch (:func:`ig_airflow.model_wrapper.select_output`).

Embedding layers are attributed like alibi's layer attribution: each named layer's ``call``
is temporarily replaced so that it returns interpolated embedding vectors that the tape
watches; all embeddings in one pass. Differences from alibi's IntegratedGradients: weights of
every quadrature rule sum to 1; the target output is selected (and calibrated) by the
artifact's metadata rather than a ``target`` argument; categorical baselines are category
indices whose embedding vectors are interpolated; attributions of each embedding are summed
over its dimensions; step counts adapt per row to a completeness tolerance. ``ig.dtype:
float64`` clones a functional or Sequential Keras model with every layer's dtype policy set to
float64 and float64 inputs (:func:`cast_keras_model`); SavedModels run in their saved dtype.

Artifacts: ``.keras`` files load with ``safe_mode=True`` (no lambdas); custom layers must be
registered by the importable module named in ``custom_objects_module``. TensorFlow
SavedModels are accepted for numeric-only models (input-level attribution).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ig_airflow.artifacts import ArtifactMetadata
from ig_airflow.baselines import Baseline
from ig_airflow.config import IGSection
from ig_airflow.engine import FixedStepResult
from ig_airflow.exceptions import ArtifactError, ConfigError
from ig_airflow.model_wrapper import select_output
from ig_airflow.quadrature import rule

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def write_tf_model(model: Any, staging: Path, loader: str | None) -> tuple[str, str]:
    """Save a Keras model as ``model.keras`` (default) or a SavedModel directory."""
    import keras

    if not isinstance(model, keras.Model):
        raise ArtifactError(f"cannot save {type(model).__name__}: expected a torch.nn.Module or keras.Model")
    loader = loader or "keras"
    if loader == "keras":
        model.save(staging / "model.keras")
        return "keras", "model.keras"
    if loader == "savedmodel":
        model.export(str(staging / "saved_model"))
        return "savedmodel", "saved_model"
    raise ArtifactError(f"unknown TensorFlow loader {loader!r}")


def load_tf_model(path: Path, metadata: ArtifactMetadata, uri: str) -> Any:
    import keras
    import tensorflow as tf

    if metadata.custom_objects_module:
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


@contextlib.contextmanager
def substitute_calls(layers: Sequence[Any], values: Sequence[Any]) -> Iterator[None]:
    """Make each Keras layer return the given tensor instead of computing its output."""
    for layer, value in zip(layers, values, strict=True):
        layer.call = lambda *args, _value=value, **kwargs: _value
    try:
        yield
    finally:
        for layer in layers:
            del layer.call


@contextlib.contextmanager
def capture_calls(layers: Sequence[Any]) -> Iterator[list[Any]]:
    captured: list[Any] = [None] * len(layers)
    for i, layer in enumerate(layers):
        original = layer.call

        def wrapped(*args: Any, _i: int = i, _original: Any = original, **kwargs: Any) -> Any:
            captured[_i] = _original(*args, **kwargs)
            return captured[_i]

        layer.call = wrapped
    try:
        yield captured
    finally:
        for layer in layers:
            del layer.call


def cast_keras_model(model: Any, dtype: str) -> Any:
    """A clone of a functional or Sequential Keras model computing in ``dtype`` throughout:
    float inputs of that dtype, every layer's dtype policy set to it, the weights cast."""
    import keras

    if not isinstance(model, keras.Model):
        raise ConfigError(f"ig.dtype: {dtype} needs a Keras model; a SavedModel runs in its saved dtype")

    def clone_layer(layer: Any) -> Any:
        config = layer.get_config()
        if "dtype" in config:
            config["dtype"] = dtype
        return layer.__class__.from_config(config)

    try:
        inputs = [
            keras.Input(t.shape[1:], dtype=dtype if "float" in str(t.dtype) else t.dtype, name=t.name)
            for t in model.inputs
        ]
        clone = keras.models.clone_model(
            model, input_tensors=inputs if len(inputs) > 1 else inputs[0], clone_function=clone_layer
        )
        clone.set_weights([w.astype(dtype) if w.dtype.kind == "f" else w for w in model.get_weights()])
    except Exception as exc:  # noqa: BLE001 - Keras raises many types while cloning
        raise ConfigError(
            f"ig.dtype: cannot rebuild {type(model).__name__} {model.name!r} in {dtype} "
            f"({type(exc).__name__}: {exc}); subclassed models run with ig.dtype: float32"
        ) from None
    return clone


class TensorFlowIG:
    """Vectorised IG for a Keras model (or a numeric-only SavedModel) against one baseline."""

    def __init__(self, model: Any, metadata: ArtifactMetadata, baseline: Baseline, settings: IGSection):
        import tensorflow as tf

        self.tf = tf
        self.float_dtype = tf.float64 if settings.dtype == "float64" else tf.float32
        self.model = cast_keras_model(model, "float64") if settings.dtype == "float64" else model
        self.metadata = metadata
        self.settings = settings
        self.layers = [self._layer(f.embedding_layer) for f in metadata.inputs.categorical]
        self.base_num = tf.constant(baseline.numeric[None, :], self.float_dtype)
        self.base_cat = tf.constant(baseline.categorical[None, :], tf.int32)
        self.base_embeddings, prediction = self._embed(self.base_num, self.base_cat)
        self.baseline_prediction = float(prediction[0])
        self.internal_batch_size = settings.internal_batch_size or self._budget_rows()

    def _layer(self, name: str) -> Any:
        import keras

        try:
            return self.model.get_layer(name)
        except (ValueError, AttributeError):
            embeddings = [
                layer.name
                for layer in getattr(self.model, "layers", [])
                if isinstance(layer, keras.layers.Embedding)
            ]
            others = [
                layer.name for layer in getattr(self.model, "layers", []) if layer.name not in embeddings
            ]
            raise ArtifactError(
                f"unknown layer name {name!r}; embedding layers in the model: {embeddings}; "
                f"other layers: {others}"
            ) from None

    def layer(self, name: str) -> TensorFlowLayerIG:
        """A backend attributing to the units of the hidden layer ``name``."""
        return TensorFlowLayerIG(self, name)

    def _budget_rows(self) -> int:
        widths = 0
        for layer in getattr(self.model, "layers", []):
            shape = getattr(getattr(layer, "output", None), "shape", None)
            if shape is not None:
                widths += int(np.prod([d for d in shape[1:] if d]))
        per_row = max(widths, 64) * self.float_dtype.size * 3
        return int(max(1, min(1 << 17, self.settings.memory_budget_mb * 2**20 // per_row)))

    def _call(self, x_num: Any, x_cat: Any) -> Any:
        if hasattr(self.model, "get_layer"):
            logits = self.model([x_num, x_cat], training=False)
        else:  # SavedModel exported by Keras: serve(inputs)
            logits = self.model.serve([x_num, x_cat])
        return select_output(logits, self.metadata.output, self.metadata.calibration)

    def _embed(self, x_num: Any, x_cat: Any) -> tuple[list[Any], Any]:
        with capture_calls(self.layers) as captured:
            prediction = self._call(x_num, x_cat)
        return list(captured), prediction

    def attribute(self, numeric: np.ndarray, categorical: np.ndarray, n_steps: int) -> FixedStepResult:
        tf = self.tf
        x_num = tf.constant(numeric, self.float_dtype)
        x_cat = tf.constant(categorical, tf.int32)
        embeddings, prediction = self._embed(x_num, x_cat)
        weights_np, alphas_np = rule(self.settings.method, n_steps)
        weights = tf.constant(weights_np, self.float_dtype)
        alphas = tf.constant(alphas_np, self.float_dtype)
        n_rows = len(numeric)
        rows_per_chunk = max(1, self.internal_batch_size // n_steps)
        ig_num, ig_emb = [], [[] for _ in embeddings]
        for start in range(0, n_rows, rows_per_chunk):
            stop = min(start + rows_per_chunk, n_rows)
            r = stop - start
            inputs = [_interpolate(tf, self.base_num, x_num[start:stop], alphas)]
            inputs += [
                _interpolate(tf, b, e[start:stop], alphas)
                for e, b in zip(embeddings, self.base_embeddings, strict=True)
            ]
            categories = tf.repeat(x_cat[start:stop], n_steps, axis=0)
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                with substitute_calls(self.layers, inputs[1:]):
                    output = self._call(inputs[0], categories)
            grads = tape.gradient(output, inputs)
            ig_num.append(_integrate(tf, grads[0], weights, r))
            for target, grad in zip(ig_emb, grads[1:], strict=True):
                target.append(_integrate(tf, grad, weights, r))
        ig_num_np = np.concatenate([g.numpy() for g in ig_num]).astype(np.float64)
        attributions = [ig_num_np * (numeric - self.base_num.numpy().astype(np.float64))]
        raw = [ig_num_np]
        for parts, emb, base in zip(ig_emb, embeddings, self.base_embeddings, strict=True):
            ig = np.concatenate([p.numpy() for p in parts]).reshape(n_rows, -1).astype(np.float64)
            diff = (emb.numpy() - base.numpy()).reshape(n_rows, -1).astype(np.float64)
            attributions.append((ig * diff).sum(1, keepdims=True))
            raw.append(ig.sum(1, keepdims=True))
        return FixedStepResult(
            attributions=np.concatenate(attributions, 1),
            integrated_gradients=np.concatenate(raw, 1),
            prediction=np.asarray(prediction, dtype=np.float64).reshape(-1),
        )


class TensorFlowLayerIG:
    """IG in the activation space of one hidden Keras layer (alibi's ``layer=``): the layer's
    output is interpolated from its value at the baseline row to its value at the input row
    and substituted for its ``call``; one attribution per unit of the output (flattened).
    PyTorch's :class:`ig_airflow.ig_torch.TorchLayerIG` computes the same."""

    def __init__(self, parent: TensorFlowIG, name: str):
        self.parent = parent
        self.name = name
        self.layer = parent._layer(name)
        with capture_calls([self.layer]) as captured:
            parent._call(parent.base_num, parent.base_cat)
        self.base = captured[0]
        self.units = int(np.prod(self.base.shape[1:]))
        self.baseline_prediction = parent.baseline_prediction

    def attribute(self, numeric: np.ndarray, categorical: np.ndarray, n_steps: int) -> FixedStepResult:
        parent, tf = self.parent, self.parent.tf
        x_num = tf.constant(numeric, parent.float_dtype)
        x_cat = tf.constant(categorical, tf.int32)
        with capture_calls([self.layer]) as captured:
            prediction = parent._call(x_num, x_cat)
        activation = captured[0]
        weights_np, alphas_np = rule(parent.settings.method, n_steps)
        weights = tf.constant(weights_np, activation.dtype)
        alphas = tf.constant(alphas_np, activation.dtype)
        rows_per_chunk = max(1, parent.internal_batch_size // n_steps)
        n_rows = len(numeric)
        parts = [np.zeros((0, self.units))]
        for start in range(0, n_rows, rows_per_chunk):
            stop = min(start + rows_per_chunk, n_rows)
            path = _interpolate(tf, self.base, activation[start:stop], alphas)
            numeric_rows = tf.repeat(x_num[start:stop], n_steps, axis=0)
            categories = tf.repeat(x_cat[start:stop], n_steps, axis=0)
            with tf.GradientTape() as tape:
                tape.watch(path)
                with substitute_calls([self.layer], [path]):
                    output = parent._call(numeric_rows, categories)
            grad = tape.gradient(output, path)
            parts.append(_integrate(tf, grad, weights, stop - start).numpy().reshape(stop - start, -1))
        ig = np.concatenate(parts).astype(np.float64)
        diff = (np.asarray(activation) - np.asarray(self.base)).reshape(n_rows, -1).astype(np.float64)
        return FixedStepResult(
            attributions=ig * diff,
            integrated_gradients=ig,
            prediction=np.asarray(prediction, dtype=np.float64).reshape(-1),
        )


def _interpolate(tf: Any, base: Any, values: Any, alphas: Any) -> Any:
    shape = values.shape[1:]
    a = tf.reshape(alphas, (1, -1) + (1,) * len(shape))
    path = tf.expand_dims(base, 1) + a * tf.expand_dims(values - base, 1)
    return tf.reshape(path, (-1, *shape))


def _integrate(tf: Any, grad: Any, weights: Any, rows: int) -> Any:
    shape = grad.shape[1:]
    flat = tf.reshape(grad, (rows, weights.shape[0], -1))
    return tf.reshape(tf.einsum("rnd,n->rd", flat, weights), (rows, *shape))
