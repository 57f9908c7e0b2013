"""The TensorFlow/Keras backend: parity with PyTorch, completeness, safe loading, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import keras_twin

keras = pytest.importorskip("keras")  # the [tensorflow] extra; installed by scripts/setup.sh

from ig_airflow.artifacts import load_artifact, save_artifact  # noqa: E402
from ig_airflow.config import IGSection  # noqa: E402
from ig_airflow.core.baselines import resolve_baseline  # noqa: E402
from ig_airflow.demo.keras_model import build_tabular_keras  # noqa: E402
from ig_airflow.exceptions import ArtifactError  # noqa: E402
from ig_airflow.run.explainer import BatchExplainer as Explainer  # noqa: E402


@pytest.fixture(scope="module")
def torch_artifact(demo):
    return load_artifact(demo["artifact"])


@pytest.fixture(scope="module")
def twin(torch_artifact, tmp_path_factory):
    """A Keras model with the PyTorch demo model's weights, saved and reloaded as an artifact."""
    return keras_twin(torch_artifact, tmp_path_factory.mktemp("tf") / "twin")


@pytest.fixture(scope="module")
def baseline(demo, torch_artifact):
    meta = torch_artifact.metadata
    return resolve_baseline(meta.inputs, meta.baseline, demo["train"])


@pytest.fixture(scope="module")
def rows(demo_frames) -> pd.DataFrame:
    return demo_frames[1].sample(400, random_state=2)


def explain(artifact, baseline, rows, **settings) -> pd.DataFrame:
    return Explainer(artifact, IGSection(**settings), baseline, ["row_id"]).explain(rows)[0].to_pandas()


def test_keras_and_pytorch_with_identical_weights_give_the_same_attributions(
    torch_artifact, twin, baseline, rows
):
    ours_torch = explain(torch_artifact, baseline, rows, n_steps=32, tolerance=None)
    ours_tf = explain(twin, baseline, rows, n_steps=32, tolerance=None)
    columns = [c for c in ours_torch.columns if c.startswith("attr__")]
    assert len(columns) == 14
    np.testing.assert_allclose(ours_tf[columns].to_numpy(), ours_torch[columns].to_numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(ours_tf.prediction, ours_torch.prediction, atol=1e-5)
    assert np.abs(ours_tf[columns].to_numpy()).max() > 1e-2


@pytest.fixture(scope="module")
def torch_float64_twin(torch_artifact, twin):
    """The PyTorch model in float64 with the standardisation constants the Keras twin holds
    (Keras keeps them as float32 mean/variance), so both are the same float64 function."""
    import copy

    import torch

    standardise = twin.model.get_layer("standardise")
    model = copy.deepcopy(torch_artifact.model).double()
    with torch.no_grad():
        model.numeric_mean.copy_(torch.as_tensor(np.asarray(standardise.mean, np.float64).reshape(-1)))
        model.numeric_std.copy_(
            torch.as_tensor(np.sqrt(np.asarray(standardise.variance, np.float64)).reshape(-1))
        )
    return type(torch_artifact)(
        uri=torch_artifact.uri,
        metadata=torch_artifact.metadata,
        model=model,
        local_dir=torch_artifact.local_dir,
    )


def test_float64_keras_model_equals_pytorch_in_float64(torch_float64_twin, twin, baseline, rows):
    reference = torch_float64_twin
    ours_torch = explain(reference, baseline, rows, n_steps=32, tolerance=None, dtype="float64")
    ours_tf = explain(twin, baseline, rows, n_steps=32, tolerance=None, dtype="float64")
    columns = [c for c in ours_torch.columns if c.startswith("attr__")]
    # float32 agrees to about 1e-7 (previous test); float64 to round-off of float64
    np.testing.assert_allclose(
        ours_tf[columns].to_numpy(), ours_torch[columns].to_numpy(), atol=1e-10, rtol=0
    )
    np.testing.assert_allclose(ours_tf.prediction, ours_torch.prediction, atol=1e-12, rtol=0)
    assert twin.model.dtype_policy.name == "float32"  # the artifact's model itself is left as it is


def test_hidden_layer_attributions_equal_pytorch(torch_float64_twin, twin, baseline, rows) -> None:
    # Keras Dense(relu) 'dense_0' is PyTorch's Linear 'mlp.0' followed by ReLU 'mlp.1'
    settings = {"n_steps": 32, "tolerance": None, "dtype": "float64"}
    ours_torch = explain(torch_float64_twin, baseline, rows, layer_attributions=["mlp.1"], **settings)
    ours_tf = explain(twin, baseline, rows, layer_attributions=["dense_0"], **settings)
    units = [c for c in ours_torch.columns if c.startswith("layer__mlp.1__")]
    assert len(units) == 64
    keras_units = [c.replace("layer__mlp.1__", "layer__dense_0__") for c in units]
    np.testing.assert_allclose(
        ours_tf[keras_units].to_numpy(), ours_torch[units].to_numpy(), atol=1e-10, rtol=0
    )
    np.testing.assert_allclose(ours_tf["layer_delta__dense_0"], ours_torch["layer_delta__mlp.1"], atol=1e-10)
    assert np.abs(ours_tf[keras_units].to_numpy()).max() > 1e-3
    with pytest.raises(ArtifactError, match=r"unknown layer name 'dense_9'.*other layers: .*'dense_0'"):
        explain(twin, baseline, rows.head(2), layer_attributions=["dense_9"])


def test_float64_needs_a_rebuildable_keras_model(twin, baseline) -> None:
    from ig_airflow.backends.keras import KerasBackend
    from ig_airflow.exceptions import ConfigError

    class Subclassed(keras.Model):
        def __init__(self, inner: keras.Model):
            super().__init__(name="subclassed")
            self.inner = inner

        def call(self, inputs):
            return self.inner(inputs)

    with pytest.raises(ConfigError, match=r"ig.dtype: cannot rebuild Subclassed 'subclassed' in float64"):
        KerasBackend().attributor(Subclassed(twin.model), twin.metadata, baseline, IGSection(dtype="float64"))


@pytest.mark.parametrize("calibrated", [True, False])
def test_completeness_at_default_settings(twin, baseline, rows, calibrated: bool) -> None:
    artifact = twin
    if not calibrated:
        meta = twin.metadata.model_copy(
            update={
                "calibration": twin.metadata.calibration.model_copy(update={"method": "none"}),
                "output": twin.metadata.output.model_copy(update={"explain": "logit"}),
            }
        )
        artifact = type(twin)(uri=twin.uri, metadata=meta, model=twin.model, local_dir=twin.local_dir)
    out = explain(artifact, baseline, rows)
    assert out["completeness_error"].notna().all() and len(out) == 400
    assert out["completeness_error"].mean() <= 0.01
    attr = out.filter(like="attr__").sum(axis=1)
    np.testing.assert_allclose(attr - (out.prediction - out.baseline_prediction), out.delta, atol=1e-9)


def test_trained_keras_demo_artifact_round_trip(demo, tmp_path: Path, rows) -> None:
    from ig_airflow.demo.prepare import train_demo_keras

    train = pd.read_parquet(demo["train"])
    meta = train_demo_keras(train.sample(6000, random_state=0), tmp_path / "keras", epochs=2)
    assert meta["framework"] == "tensorflow" and meta["loader"] == "keras" and "model.keras" in meta["files"]
    artifact = load_artifact(str(tmp_path / "keras"))
    base = resolve_baseline(artifact.metadata.inputs, artifact.metadata.baseline, demo["train"])
    out = explain(artifact, base, rows.head(100))
    assert out["completeness_error"].mean() <= 0.01


def test_unknown_layer_name_is_named(twin, baseline) -> None:
    spec = twin.metadata.inputs
    bad = spec.model_copy(
        update={
            "categorical": [spec.categorical[0].model_copy(update={"embedding_layer": "embedding_nope"})]
            + list(spec.categorical[1:])
        }
    )
    artifact = type(twin)(
        uri=twin.uri,
        metadata=twin.metadata.model_copy(update={"inputs": bad}),
        model=twin.model,
        local_dir=twin.local_dir,
    )
    with pytest.raises(ArtifactError, match=r"unknown layer name 'embedding_nope'.*'embedding_workclass'"):
        Explainer(artifact, IGSection(), baseline)


def test_output_index_out_of_range_is_named(twin, baseline) -> None:
    meta = twin.metadata.model_copy(update={"output": twin.metadata.output.model_copy(update={"index": 2})})
    artifact = type(twin)(uri=twin.uri, metadata=meta, model=twin.model, local_dir=twin.local_dir)
    with pytest.raises(ArtifactError, match="output index 2 is out of range: the model returns 1 output"):
        Explainer(artifact, IGSection(), baseline)


@keras.saving.register_keras_serializable(package="ig_airflow_tests")
class Doubler(keras.layers.Layer):
    def call(self, inputs):
        return inputs * 2.0


def test_unregistered_custom_layer_is_refused_with_its_name(tmp_path: Path) -> None:
    x = keras.Input((3,), name="numeric")
    c = keras.Input((0,), dtype="int32", name="categorical")
    model = keras.Model([x, c], keras.layers.Dense(1)(Doubler(name="doubler")(x)))
    spec = {"numeric": [{"name": n} for n in "abc"]}
    save_artifact(model, str(tmp_path / "custom"), inputs=spec)  # no custom_objects_module
    registered = keras.saving.get_custom_objects().pop("ig_airflow_tests>Doubler")
    try:
        with pytest.raises(ArtifactError, match=r"safe_mode=True: .*Doubler.*custom_objects_module"):
            load_artifact(str(tmp_path / "custom"))
    finally:
        keras.saving.get_custom_objects()["ig_airflow_tests>Doubler"] = registered


def test_savedmodel_numeric_only_matches_keras_file(tmp_path: Path) -> None:
    from ig_airflow.core.baselines import Baseline

    keras.utils.set_random_seed(0)
    model = build_tabular_keras(3, [], [], hidden=[8])
    spec = {"numeric": [{"name": n} for n in "abc"]}
    save_artifact(model, str(tmp_path / "sm"), inputs=spec, loader="savedmodel")
    save_artifact(model, str(tmp_path / "kf"), inputs=spec)
    frame = pd.DataFrame(np.random.default_rng(0).normal(size=(20, 3)), columns=list("abc"))
    base = Baseline(np.zeros(3), np.zeros(0, np.int64))
    with pytest.raises(ArtifactError, match="SavedModel is a graph whose ops run.*model.allow_pickle: true"):
        load_artifact(str(tmp_path / "sm"))  # graph code needs the opt-in
    results = [
        explain(load_artifact(str(tmp_path / n), allow_pickle=True), base, frame.assign(row_id=range(20)))
        for n in ("sm", "kf")
    ]
    np.testing.assert_allclose(results[0].filter(like="attr__"), results[1].filter(like="attr__"), atol=1e-6)
    from ig_airflow.exceptions import ConfigError

    with pytest.raises(
        ConfigError, match="float64 needs a Keras model; a SavedModel runs in its saved dtype"
    ):
        explain(
            load_artifact(str(tmp_path / "sm"), allow_pickle=True),
            base,
            frame.assign(row_id=range(20)),
            dtype="float64",
        )
    with pytest.raises(ArtifactError, match="SavedModel supports input-level attribution only"):
        spec_cat = {**spec, "categorical": [{"name": "kind", "vocabulary": ["x"], "embedding_layer": "e"}]}
        save_artifact(model, str(tmp_path / "sm2"), inputs=spec_cat, loader="savedmodel")
        load_artifact(str(tmp_path / "sm2"), allow_pickle=True)
