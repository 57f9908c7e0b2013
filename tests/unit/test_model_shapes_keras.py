"""A Keras functional model as the Keras preprocessing tutorials write it: one ``Input`` per
column, ``Normalization`` and ``StringLookup`` inside the model, explained through the public
API with no wrapper (issue 16). The lookup's vocabulary is read from the model when the artifact
is saved; attributions equal a reference ``tf.GradientTape`` computation of IG over the same
inputs (numeric columns and the lookup's embedding or one-hot output) to 1e-5."""

from __future__ import annotations

import time

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from ig_airflow import InputSpec, explain_dataframe, save_artifact
from ig_airflow.exceptions import ArtifactError

STEPS = 64
COLORS = ["green", "blue", "red"]  # the lookup's own order, not sorted


def rows(n: int = 24, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.normal(40, 12, n).round(),
            "hours": rng.normal(40, 8, n).round(),
            "color": rng.choice(COLORS, n),
        }
    )


class Tutorial:
    """The model and handles on its layers (the reference IG calls the model's own layers)."""

    def __init__(self, frame: pd.DataFrame, one_hot: bool):
        keras.utils.set_random_seed(0)
        inputs = {
            "age": keras.Input(shape=(1,), name="age"),
            "hours": keras.Input(shape=(1,), name="hours"),
            "color": keras.Input(shape=(1,), name="color", dtype="string"),
        }
        self.norms = {}
        for name in ("age", "hours"):
            self.norms[name] = keras.layers.Normalization(name=f"{name}_norm")
            self.norms[name].adapt(frame[[name]].to_numpy("float32"))
        mode = "one_hot" if one_hot else "int"
        self.lookup = keras.layers.StringLookup(vocabulary=COLORS, output_mode=mode, name="color_lookup")
        self.embedding = None if one_hot else keras.layers.Embedding(4, 3, name="color_embedding")
        self.flatten = keras.layers.Flatten()
        self.concat = keras.layers.Concatenate()
        self.hidden = keras.layers.Dense(8, activation="tanh")
        self.out = keras.layers.Dense(1)
        color = self.lookup(inputs["color"])
        color = color if one_hot else self.flatten(self.embedding(color))
        features = self.concat(
            [self.norms["age"](inputs["age"]), self.norms["hours"](inputs["hours"]), color]
        )
        self.model = keras.Model(inputs, self.out(self.hidden(features)))
        self.attributed_at = self.lookup if one_hot else self.embedding

    def tail(self, age: tf.Tensor, hours: tf.Tensor, color: tf.Tensor) -> tf.Tensor:
        """The model from the numeric inputs and the attributed layer's output on."""
        color = color if self.embedding is None else self.flatten(color)
        features = self.concat([self.norms["age"](age), self.norms["hours"](hours), color])
        return tf.sigmoid(self.out(self.hidden(features)))[:, 0]

    def color_vectors(self, values: np.ndarray) -> tf.Tensor:
        looked_up = self.lookup(tf.constant(values.reshape(-1, 1)))
        return tf.cast(looked_up, tf.float32) if self.embedding is None else self.embedding(looked_up)

    def serve(self, frame: pd.DataFrame) -> np.ndarray:
        batch = {c: frame[[c]].to_numpy("float32") for c in ("age", "hours")}
        batch["color"] = frame[["color"]].to_numpy().astype(str)
        return tf.sigmoid(self.model(batch)).numpy().reshape(-1)


def reference_ig(tail, values: list[tf.Tensor], bases: list[tf.Tensor]) -> list[np.ndarray]:
    """IG by GradientTape and Gauss-Legendre quadrature on [0, 1], independent of the engine."""
    nodes, weights = np.polynomial.legendre.leggauss(STEPS)
    totals = [np.zeros(v.shape) for v in values]
    for node, weight in zip((nodes + 1) / 2, weights / 2, strict=True):
        path = [b + float(node) * (v - b) for v, b in zip(values, bases, strict=True)]
        with tf.GradientTape() as tape:
            tape.watch(path)
            output = tf.reduce_sum(tail(*path))
        for total, grad in zip(totals, tape.gradient(output, path), strict=True):
            total += weight * grad.numpy()
    return [t * (v - b).numpy() for t, v, b in zip(totals, values, bases, strict=True)]


@pytest.mark.parametrize("one_hot", [False, True], ids=["embedding", "one_hot_lookup"])
def test_one_input_per_column_with_string_lookup_equals_gradient_tape(tmp_path, one_hot) -> None:
    frame = rows()
    tutorial = Tutorial(frame, one_hot)
    spec = InputSpec(
        numeric=[{"name": "age"}, {"name": "hours"}], categorical=[{"name": "color"}], calling="per_feature"
    )
    metadata = save_artifact(
        tutorial.model,
        str(tmp_path / "keras"),
        inputs=spec,
        example_rows=frame[:5],
        example_predictions=tutorial.serve(frame[:5]),
    )
    color = metadata.inputs.categorical[0]
    assert color.vocabulary == COLORS and color.oov_index == 0 and color.input_encoding == "string"
    assert color.embedding_layer == tutorial.attributed_at.name  # found downstream of the Input

    fixed = {"method": "gausslegendre", "n_steps": STEPS, "tolerance": None}  # the reference's rule
    explained = explain_dataframe(frame, str(tmp_path / "keras"), **fixed)
    np.testing.assert_allclose(explained["prediction"], tutorial.serve(frame), atol=1e-6)
    ours = explained[["attr__age", "attr__hours", "attr__color"]].to_numpy()
    change = explained["prediction"] - explained["baseline_prediction"]
    np.testing.assert_allclose(ours.sum(1), change, atol=1e-4)  # float32, smooth model, 64 steps

    age = tf.constant(frame[["age"]].to_numpy("float32"))
    hours = tf.constant(frame[["hours"]].to_numpy("float32"))
    vectors = tutorial.color_vectors(frame["color"].to_numpy().astype(str))
    unknown = tutorial.color_vectors(np.array(["<OOV>"] * len(frame)))  # the baseline: OOV row
    expected = reference_ig(
        tutorial.tail, [age, hours, vectors], [tf.zeros_like(age), tf.zeros_like(hours), unknown]
    )
    reference = np.column_stack([e.reshape(len(frame), -1).sum(1) for e in expected])
    np.testing.assert_allclose(ours, reference, atol=1e-5)

    # ig.dtype float64 clones the model (Normalization's adapted state and the lookup carried over)
    exact = explain_dataframe(frame, str(tmp_path / "keras"), dtype="float64", **fixed)
    np.testing.assert_allclose(exact["prediction"], tutorial.serve(frame), atol=1e-6)
    np.testing.assert_allclose(exact["delta"], 0.0, atol=1e-9)


def test_a_vocabulary_that_differs_from_the_lookup_is_refused_naming_the_feature(tmp_path) -> None:
    frame = rows()
    tutorial = Tutorial(frame, one_hot=False)
    spec = {
        "numeric": [{"name": "age"}, {"name": "hours"}],
        "categorical": [{"name": "color", "vocabulary": sorted(COLORS)}],  # not the model's order
        "calling": "per_feature",
    }
    started = time.perf_counter()
    with pytest.raises(ArtifactError, match=r"feature 'color'.*StringLookup 'color_lookup'"):
        save_artifact(tutorial.model, str(tmp_path / "wrong"), inputs=spec)
    assert time.perf_counter() - started < 5
    assert not (tmp_path / "wrong").exists()
