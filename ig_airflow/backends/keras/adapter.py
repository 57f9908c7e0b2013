"""The Keras model as the IG algorithm sees it, with ``tf.GradientTape`` gradients.

Convention, as for PyTorch: ``model([x_num, x_cat])`` with ``x_num`` float32
``[batch, n_numeric]`` and ``x_cat`` int32 ``[batch, n_categorical]``, returning logits
``[batch]``, ``[batch, 1]`` or ``[batch, n_outputs]``. The output is selected and calibrated
exactly as for PyTorch (:func:`ig_airflow.core.outputs.select_output`).

Embedding layers are attributed like alibi's layer attribution: each named layer's ``call``
is temporarily replaced so that it returns interpolated embedding vectors that the tape
watches; all embeddings in one pass. Differences from alibi's IntegratedGradients: weights of
every quadrature rule sum to 1; the target output is selected (and calibrated) by the
artifact's metadata rather than a ``target`` argument; categorical baselines are category
indices whose embedding vectors are interpolated; attributions of each embedding are summed
over its dimensions; step counts adapt per row to a completeness tolerance. ``ig.dtype:
float64`` clones a functional or Sequential Keras model with every layer's dtype policy set to
float64 and float64 inputs (:func:`cast_keras_model`); SavedModels run in their saved dtype.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ig_airflow.core.outputs import select_output
from ig_airflow.exceptions import ArtifactError, ConfigError
from ig_airflow.spec import ArtifactMetadata


class TensorFlowOps:
    """:class:`~ig_airflow.core.backend.TensorOps` for TensorFlow tensors of one float dtype."""

    def __init__(self, dtype: tf.DType):
        self.dtype = dtype

    def constant(self, array: np.ndarray) -> tf.Tensor:
        return tf.constant(array, self.dtype)

    @staticmethod
    def numpy(tensor: Any) -> np.ndarray:
        return np.asarray(tensor, dtype=np.float64)

    @staticmethod
    def interpolate(base: Any, values: Any, alphas: Any) -> tf.Tensor:
        shape = values.shape[1:]
        a = tf.reshape(alphas, (1, -1) + (1,) * len(shape))
        path = tf.expand_dims(base, 1) + a * tf.expand_dims(values - base, 1)
        return tf.reshape(path, (-1, *shape))

    @staticmethod
    def integrate(grad: Any, weights: Any, rows: int) -> tf.Tensor:
        shape = grad.shape[1:]
        flat = tf.reshape(grad, (rows, weights.shape[0], -1))
        return tf.reshape(tf.einsum("rnd,n->rd", flat, weights), (rows, *shape))

    @staticmethod
    def gradients(fn: Callable[[list[Any]], Any], inputs: list[Any]) -> list[Any]:
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            output = fn(inputs)
        return list(tape.gradient(output, inputs))

    @staticmethod
    def concat(parts: Sequence[Any]) -> tf.Tensor:
        return tf.concat(list(parts), axis=0)

    @staticmethod
    def repeat(tensor: Any, times: int) -> tf.Tensor:
        return tf.repeat(tensor, times, axis=0)

    @staticmethod
    def reshape(tensor: Any, shape: tuple[int, ...]) -> tf.Tensor:
        return tf.reshape(tensor, shape)

    @staticmethod
    def sigmoid(tensor: Any) -> tf.Tensor:
        return tf.sigmoid(tensor)

    @staticmethod
    def softmax(tensor: Any) -> tf.Tensor:
        return tf.nn.softmax(tensor, axis=-1)


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
    """Record each Keras layer's output during the calls inside the block."""
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


class KerasModelAdapter:
    """A Keras model (or a numeric-only SavedModel) as a
    :class:`~ig_airflow.core.backend.ModelAdapter`.

    Args:
        model: the loaded model.
        metadata: the artifact metadata (input spec, output, calibration).
        dtype: ``"float32"`` or ``"float64"`` (a Keras model is cloned in float64).
    """

    def __init__(self, model: Any, metadata: ArtifactMetadata, dtype: str = "float32"):
        self.float_dtype = tf.float64 if dtype == "float64" else tf.float32
        self.model = cast_keras_model(model, "float64") if dtype == "float64" else model
        self.metadata = metadata
        self.ops = TensorFlowOps(self.float_dtype)
        self.embedding_layers = [self.layer(f.embedding_layer) for f in metadata.inputs.categorical]

    def layer(self, name: str) -> Any:
        """The layer called ``name``; a clear error lists the layers that exist."""
        try:
            return self.model.get_layer(name)
        except (ValueError, AttributeError):
            layers = getattr(self.model, "layers", [])
            embeddings = [layer.name for layer in layers if isinstance(layer, keras.layers.Embedding)]
            others = [layer.name for layer in layers if layer.name not in embeddings]
            raise ArtifactError(
                f"unknown layer name {name!r}; embedding layers in the model: {embeddings}; "
                f"other layers: {others}"
            ) from None

    def tensors(self, numeric: np.ndarray, categorical: np.ndarray) -> tuple[Any, Any]:
        return tf.constant(numeric, self.float_dtype), tf.constant(categorical, tf.int32)

    def __call__(self, x_num: Any, x_cat: Any) -> Any:
        if hasattr(self.model, "get_layer"):
            logits = self.model([x_num, x_cat], training=False)
        else:  # SavedModel exported by Keras: serve(inputs)
            logits = self.model.serve([x_num, x_cat])
        return select_output(logits, self.metadata.output, self.metadata.calibration, self.ops)

    capture = staticmethod(capture_calls)
    substitute = staticmethod(substitute_calls)

    @staticmethod
    def inference() -> Any:
        return contextlib.nullcontext()

    def bytes_per_interpolated_row(self, x_num: Any, x_cat: Any) -> int:
        """Every layer's output width (kept for the tape), its gradient and the inputs."""
        widths = 0
        for layer in getattr(self.model, "layers", []):
            shape = getattr(getattr(layer, "output", None), "shape", None)
            if shape is not None:
                widths += int(np.prod([d for d in shape[1:] if d]))
        return max(widths, 64) * self.float_dtype.size * 3
