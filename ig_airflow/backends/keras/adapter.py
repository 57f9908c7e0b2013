"""The Keras model as the IG algorithm sees it, with ``tf.GradientTape`` gradients.

The model is called as the input spec's ``calling`` says: ``model([x_num, x_cat])`` (float32
``[batch, n_numeric]``, int32 ``[batch, n_categorical]``), ``model({name: column})``, one
tensor per ``Input`` matched by name (``per_feature``; a ``StringLookup`` inside the model gets
the raw strings) or ``model(x_dense)``; it returns logits ``[batch]``, ``[batch, 1]`` or
``[batch, n_outputs]``, calibrated exactly as for PyTorch
(:func:`ig_airflow.core.outputs.calibrated_scores`).

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

from ig_airflow.core.calling import attributed_layers, feature_columns
from ig_airflow.core.outputs import calibrated_scores
from ig_airflow.exceptions import ArtifactError, ConfigError
from ig_airflow.spec import OOV_TOKEN, ArtifactMetadata


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
    def gradients(fn: Callable[[list[Any]], Any], inputs: list[Any]) -> list[list[Any]]:
        """One forward on the tape; one gradient per target column (a persistent tape for several)."""
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(inputs)
            output = fn(inputs)
            columns = [tf.reduce_sum(output[:, t]) for t in range(output.shape[1])]
        try:
            return [list(tape.gradient(column, inputs)) for column in columns]
        finally:
            del tape

    @staticmethod
    def take(tensor: Any, columns: np.ndarray) -> tf.Tensor:
        return tf.gather(tensor, tf.constant(columns, tf.int32), batch_dims=1)

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

    @staticmethod
    def log(tensor: Any) -> tf.Tensor:
        return tf.math.log(tensor)


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
def capture_calls(layers: Sequence[Any], float_dtype: Any = tf.float32) -> Iterator[list[Any]]:
    """Record each Keras layer's output during the calls inside the block (an integer output,
    such as a one-hot ``StringLookup``, recorded as ``float_dtype`` so it can be interpolated)."""
    captured: list[Any] = [None] * len(layers)
    for i, layer in enumerate(layers):
        original = layer.call

        def wrapped(*args: Any, _i: int = i, _original: Any = original, **kwargs: Any) -> Any:
            output = _original(*args, **kwargs)
            is_integer = getattr(getattr(output, "dtype", None), "is_integer", False)
            captured[_i] = tf.cast(output, float_dtype) if is_integer else output
            return output

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
        if "dtype" in config and "float" in str(getattr(layer, "compute_dtype", "float")):
            config["dtype"] = dtype  # lookups and other integer/string layers keep theirs
        return layer.__class__.from_config(config)

    def as_input(t: Any) -> Any:
        return keras.Input(t.shape[1:], dtype=dtype if "float" in str(t.dtype) else t.dtype, name=t.name)

    try:
        inputs = keras.tree.map_structure(as_input, model.input)  # list, dict or one, as built
        clone = keras.models.clone_model(model, input_tensors=inputs, clone_function=clone_layer)
        clone.set_weights([w.astype(dtype) if w.dtype.kind == "f" else w for w in model.get_weights()])
        for layer in clone.layers:  # preprocessing state (Normalization's mean) from the weights
            if hasattr(layer, "finalize_state") and getattr(layer, "built", False):
                layer.finalize_state()
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
        self.spec = metadata.inputs
        self.embedding_layers = [self.layer(name) for name in attributed_layers(self.spec)]
        self.strings = {
            f.name: tf.constant([f.value_of_index().get(i, OOV_TOKEN) for i in range(f.cardinality)])
            for f in self.spec.categorical
            if f.input_encoding == "string"
        }
        self.input_dtypes = {t.name: t.dtype for t in getattr(self.model, "inputs", None) or []}

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

    def arguments(self, x_num: Any, x_cat: Any) -> Any:
        """The model's inputs built from the float and index blocks, as ``calling`` says."""
        calling = self.spec.calling
        if calling == "dense":
            return x_num
        if calling == "positional":
            return [x_num, x_cat]
        columns = feature_columns(self.spec, x_num, x_cat)
        for name, table in self.strings.items():
            columns[name] = tf.gather(table, columns[name])
        for name, column in columns.items():
            dtype = self.input_dtypes.get(name)
            if dtype is not None and dtype != "string" and column.dtype != dtype:
                columns[name] = tf.cast(column, dtype)
        unknown = [n for n in self.input_dtypes if n not in columns]
        if unknown:
            raise ArtifactError(f"the model's Input(s) {unknown} match no feature of the input spec")
        return columns  # dict and per_feature alike: a functional model matches inputs by name

    def __call__(self, x_num: Any, x_cat: Any) -> Any:
        """Calibrated scores ``[batch, n_outputs]``."""
        arguments = self.arguments(x_num, x_cat)
        if hasattr(self.model, "get_layer"):
            logits = self.model(arguments, training=False)
        else:  # SavedModel exported by Keras: serve(inputs)
            logits = self.model.serve(arguments)
        return calibrated_scores(logits, self.metadata.output, self.metadata.calibration, self.ops)

    def capture(self, layers: Sequence[Any]) -> Any:
        return capture_calls(layers, self.float_dtype)

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
