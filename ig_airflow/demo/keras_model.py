"""The demo's Keras 3 twin of :class:`ig_airflow.demo.torch_model.TabularNet`.

Importing this module registers its custom layer, so artifacts name it in
``custom_objects_module`` and load with ``safe_mode=True``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from ig_airflow.spec import InputSpec


@keras.saving.register_keras_serializable(package="ig_airflow")
class SelectColumn(keras.layers.Layer):
    """``x[:, index]`` as a serialisable layer (``Lambda`` is refused by ``safe_mode``)."""

    def __init__(self, index: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.index = index

    def call(self, inputs: Any) -> Any:
        return keras.ops.take(inputs, self.index, axis=1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "index": self.index}


def build_tabular_keras(
    n_numeric: int,
    categorical: Sequence[str],
    cardinalities: Sequence[int],
    embedding_dim: int = 8,
    hidden: Sequence[int] = (64, 32),
    numeric_mean: Sequence[float] | None = None,
    numeric_std: Sequence[float] | None = None,
) -> keras.Model:
    """Functional model ``[x_num, x_cat] -> logit [batch, 1]``; embeddings are named
    ``embedding_<feature>``."""
    x_num = keras.Input((n_numeric,), name="numeric")
    x_cat = keras.Input((len(categorical),), dtype="int32", name="categorical")
    mean = np.zeros(n_numeric) if numeric_mean is None else np.asarray(numeric_mean)
    std = np.ones(n_numeric) if numeric_std is None else np.asarray(numeric_std)
    parts = [keras.layers.Normalization(mean=mean, variance=std**2, name="standardise")(x_num)]
    for j, (name, card) in enumerate(zip(categorical, cardinalities, strict=True)):
        column = SelectColumn(j, name=f"select_{name}")(x_cat)
        parts.append(keras.layers.Embedding(card, embedding_dim, name=f"embedding_{name}")(column))
    h = keras.layers.Concatenate(name="concat")(parts)
    for i, size in enumerate(hidden):
        h = keras.layers.Dense(size, activation="relu", name=f"dense_{i}")(h)
    return keras.Model([x_num, x_cat], keras.layers.Dense(1, name="logit")(h), name="tabular_net")


def keras_from_torch(torch_model: Any) -> keras.Model:
    """A Keras model with the same weights as a :class:`TabularNet` (layer by layer)."""
    import torch

    linears = [m for m in torch_model.mlp if isinstance(m, torch.nn.Linear)]
    names = torch_model.categorical
    model = build_tabular_keras(
        n_numeric=int(torch_model.numeric_mean.shape[0]),
        categorical=names,
        cardinalities=[torch_model.embeddings[n].num_embeddings for n in names],
        embedding_dim=torch_model.embeddings[names[0]].embedding_dim if names else 8,
        hidden=[lin.out_features for lin in linears[:-1]],
        numeric_mean=torch_model.numeric_mean.detach().double().numpy(),
        numeric_std=torch_model.numeric_std.detach().double().numpy(),
    )
    for name in names:
        model.get_layer(f"embedding_{name}").set_weights(
            [torch_model.embeddings[name].weight.detach().numpy()]
        )
    dense = [model.get_layer(f"dense_{i}") for i in range(len(linears) - 1)] + [model.get_layer("logit")]
    for layer, lin in zip(dense, linears, strict=True):
        layer.set_weights([lin.weight.detach().numpy().T, lin.bias.detach().numpy()])
    return model


def train_tabular_keras(
    frame: Any,
    spec: InputSpec,
    label: str,
    *,
    epochs: int = 4,
    seed: int = 0,
    embedding_dim: int = 8,
    hidden: Sequence[int] = (64, 32),
) -> keras.Model:
    """Train the Keras twin on ``frame`` (binary cross-entropy on the logit)."""
    from ig_airflow.core.encoding import encode_rows

    keras.utils.set_random_seed(seed)
    numeric, categorical = encode_rows(frame, spec)
    model = build_tabular_keras(
        len(spec.numeric),
        spec.categorical_names,
        [f.cardinality for f in spec.categorical],
        embedding_dim,
        hidden,
        numeric.mean(0),
        numeric.std(0) + 1e-6,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3), loss=keras.losses.BinaryCrossentropy(from_logits=True)
    )
    model.fit(
        [numeric.astype("float32"), categorical.astype("int32")],
        frame[label].to_numpy(dtype="float32"),
        batch_size=256,
        epochs=epochs,
        verbose=0,
        shuffle=True,
    )
    return model


def keras_input_spec(spec: InputSpec) -> InputSpec:
    """The same input spec with this model's embedding layer names (``embedding_<feature>``)."""
    return spec.model_copy(
        update={
            "categorical": [
                f.model_copy(update={"embedding_layer": f"embedding_{f.name}"}) for f in spec.categorical
            ]
        }
    )
