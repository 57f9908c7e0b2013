"""The PyTorch IG engine against known answers, plain Captum and completeness."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from captum.attr import LayerIntegratedGradients

from ig_airflow.artifacts import load_artifact, save_artifact
from ig_airflow.backends.torch.attribution import torch_attributor
from ig_airflow.backends.torch.wrapper import TorchModelWrapper
from ig_airflow.config import IGSection
from ig_airflow.core.adaptive import adaptive_attributions as explain_rows
from ig_airflow.core.baselines import Baseline, resolve_baseline
from ig_airflow.core.encoding import encode_rows
from ig_airflow.dataset import open_dataset
from ig_airflow.demo.torch_model import TabularNet
from ig_airflow.run.explainer import explain_dataframe
from ig_airflow.spec import ArtifactMetadata, Calibration


class PaperNet(torch.nn.Module):
    """relu(relu(x1) - 1 - relu(x2)) from the IG paper; at x=(3, 1) IG gives (1.5, -0.5)."""

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        relu = torch.relu
        return relu(relu(x_num[:, 0]) - 1 - relu(x_num[:, 1]))


def test_known_answer_from_the_paper() -> None:
    meta = ArtifactMetadata(
        framework="pytorch",
        loader="pickle",
        model_file="-",
        inputs={"numeric": [{"name": "x1"}, {"name": "x2"}]},
        output={"explain": "logit"},
    )
    wrapper = TorchModelWrapper(PaperNet(), meta, dtype=torch.float64)
    backend = torch_attributor(wrapper, Baseline(np.zeros(2), np.zeros(0, np.int64)), IGSection())
    # midpoints of an even grid put exactly half the nodes past the kink at alpha = 0.5
    result = backend.attribute(np.array([[3.0, 1.0]]), np.zeros((1, 0), np.int64), 64)
    np.testing.assert_allclose(result.attributions, [[1.5, -0.5]], atol=1e-12)
    meta_mid = IGSection(method="riemann_middle")
    backend = torch_attributor(wrapper, Baseline(np.zeros(2), np.zeros(0, np.int64)), meta_mid)
    np.testing.assert_allclose(
        backend.attribute(np.array([[3.0, 1.0]]), np.zeros((1, 0), np.int64), 64).attributions,
        [[1.5, -0.5]],
        atol=1e-12,
    )


@pytest.fixture(scope="module")
def demo_parts(demo, demo_frames):
    artifact = load_artifact(demo["artifact"])
    train, test = demo_frames
    baseline = resolve_baseline(artifact.metadata.inputs, artifact.metadata.baseline, demo["train"])
    return artifact, baseline, test


def _backend(artifact, baseline, dtype=torch.float64, metadata=None, **settings):
    wrapper = TorchModelWrapper(artifact.model, metadata or artifact.metadata, dtype=dtype)
    return torch_attributor(wrapper, baseline, IGSection(**settings)), wrapper


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_middle"])
def test_equals_plain_captum_layer_integrated_gradients(demo_parts, method: str) -> None:
    artifact, baseline, test = demo_parts
    rows = test.sample(200, random_state=1)
    numeric, categorical = encode_rows(rows, artifact.metadata.inputs)
    backend, wrapper = _backend(artifact, baseline, method=method, internal_batch_size=1000)
    ours = backend.attribute(numeric, categorical, 32).attributions

    model = wrapper.model
    layers = [model.numeric_input] + [
        model.get_submodule(f.embedding_layer) for f in artifact.metadata.inputs.categorical
    ]
    lig = LayerIntegratedGradients(wrapper, layers)
    x_num, x_cat = wrapper.tensors(numeric, categorical)
    b_num, b_cat = wrapper.tensors(
        np.repeat(baseline.numeric[None], len(rows), 0), np.repeat(baseline.categorical[None], len(rows), 0)
    )
    captum = lig.attribute((x_num, x_cat), baselines=(b_num, b_cat), n_steps=32, method=method)
    reference = torch.cat([captum[0]] + [a.sum(-1, keepdim=True) for a in captum[1:]], 1).numpy()
    np.testing.assert_allclose(ours, reference, atol=1e-5, rtol=0)
    assert np.abs(ours).max() > 1e-2  # not trivially zero


def test_vectorized_engine_equals_captum_backend(demo_parts) -> None:
    artifact, baseline, test = demo_parts
    numeric, categorical = encode_rows(test.head(64), artifact.metadata.inputs)
    ours = _backend(artifact, baseline, method="gausslegendre", internal_batch_size=500)[0].attribute(
        numeric, categorical, 16
    )
    ref = _backend(artifact, baseline, engine="captum", internal_batch_size=500)[0].attribute(
        numeric, categorical, 16
    )
    np.testing.assert_allclose(ours.attributions, ref.attributions, atol=1e-9)
    np.testing.assert_allclose(ours.prediction, ref.prediction, atol=1e-12)


def test_chunking_does_not_change_results(demo_parts) -> None:
    artifact, baseline, test = demo_parts
    numeric, categorical = encode_rows(test.head(50), artifact.metadata.inputs)
    big = _backend(artifact, baseline, internal_batch_size=100_000)[0].attribute(numeric, categorical, 32)
    small = _backend(artifact, baseline, internal_batch_size=37)[0].attribute(numeric, categorical, 32)
    np.testing.assert_allclose(big.attributions, small.attributions, atol=1e-12)


def test_default_settings_meet_one_percent_mean_completeness_with_every_row_reported(
    demo, demo_frames
) -> None:
    _, test = demo_frames
    rows = test.sample(2000, random_state=0)
    out = explain_dataframe(rows, demo["artifact"], id_columns=["row_id"], reference=demo_frames[0])
    assert len(out) == 2000 and out["row_id"].tolist() == rows["row_id"].tolist()
    assert out["completeness_error"].notna().all()
    assert out["completeness_error"].mean() <= 0.01
    attr = out.filter(like="attr__").sum(axis=1)
    np.testing.assert_allclose(attr - (out.prediction - out.baseline_prediction), out.delta, atol=1e-9)
    converged = out[out.converged]
    assert len(converged) >= 0.98 * len(out)
    rel = (  # ig.atol: 1e-4 of a probability by default
        np.abs(converged.delta) <= 0.01 * np.abs(converged.prediction - converged.baseline_prediction) + 1e-4
    )
    assert rel.all()


def test_adaptive_steps_refine_only_rows_above_tolerance(demo_parts) -> None:
    artifact, baseline, test = demo_parts
    numeric, categorical = encode_rows(test.head(300), artifact.metadata.inputs)
    backend, _ = _backend(artifact, baseline)
    doubling = {
        "method": "gausslegendre",
        "n_steps": 8,
    }  # adaptive_trapezoid: tests/unit/core/test_adaptive.py
    fixed = explain_rows(backend, numeric, categorical, IGSection(**doubling, tolerance=None))
    adaptive = explain_rows(
        backend, numeric, categorical, IGSection(**doubling, tolerance=0.01, max_steps=256)
    )
    assert (fixed.n_steps == 8).all() and fixed.converged.all()
    refined = adaptive.n_steps > 8
    assert 0 < refined.sum() < 300
    np.testing.assert_array_equal(adaptive.attributions[~refined], fixed.attributions[~refined])
    assert adaptive.completeness_error[refined].mean() < fixed.completeness_error[refined].mean()
    assert adaptive.gradient_evaluations < 300 * 256


@pytest.mark.parametrize(
    "calibration",
    [{"method": "platt", "a": 1.7, "b": -0.4}, {"method": "temperature", "temperature": 2.5}],
)
def test_calibrated_attributions_sum_to_change_in_calibrated_output(demo_parts, calibration) -> None:
    artifact, baseline, test = demo_parts
    meta = artifact.metadata.model_copy(update={"calibration": Calibration(**calibration)})
    backend, wrapper = _backend(artifact, baseline, metadata=meta)
    numeric, categorical = encode_rows(test.head(100), meta.inputs)
    result = explain_rows(backend, numeric, categorical, IGSection(dtype="float64"))
    with torch.no_grad():
        z = wrapper.model(*wrapper.tensors(numeric, categorical))
        zb = wrapper.model(*wrapper.tensors(baseline.numeric[None], baseline.categorical[None]))
    if calibration["method"] == "platt":
        expected = torch.sigmoid(1.7 * z + -0.4) - torch.sigmoid(1.7 * zb - 0.4)
    else:
        expected = torch.sigmoid(z / 2.5) - torch.sigmoid(zb / 2.5)
    np.testing.assert_allclose(result.prediction - result.baseline_prediction, expected.numpy(), atol=1e-12)
    close = np.abs(result.attributions.sum(1) - expected.numpy()) <= 0.01 * np.abs(expected.numpy()) + 1e-6
    assert close.mean() >= 0.98


def test_multiclass_temperature_softmax_output(tmp_path) -> None:
    torch.manual_seed(3)
    kwargs = {"n_numeric": 2, "categorical": ["c"], "cardinalities": [3], "hidden": [16], "n_outputs": 3}
    spec = {
        "numeric": [{"name": "a"}, {"name": "b"}],
        "categorical": [{"name": "c", "vocabulary": ["x", "y"], "embedding_layer": "embeddings.c"}],
    }
    save_artifact(
        TabularNet(**kwargs),
        str(tmp_path / "mc"),
        inputs=spec,
        model_kwargs=kwargs,
        output={"index": 2},
        calibration={"method": "temperature", "temperature": 0.7},
    )
    art = load_artifact(str(tmp_path / "mc"))
    rng = np.random.default_rng(0)
    numeric = rng.normal(size=(40, 2))
    categorical = rng.integers(0, 3, size=(40, 1))
    backend, wrapper = _backend(art, Baseline(np.zeros(2), np.array([0])))
    result = explain_rows(backend, numeric, categorical, IGSection(dtype="float64"))
    with torch.no_grad():
        p = torch.softmax(wrapper.model(*wrapper.tensors(numeric, categorical)) / 0.7, -1)[:, 2].numpy()
    np.testing.assert_allclose(result.prediction, p, atol=1e-12)
    assert (
        np.mean(np.abs(result.delta) <= 0.01 * np.abs(result.prediction - result.baseline_prediction) + 1e-4)
        > 0.95
    )


def test_output_index_out_of_range_is_a_clear_error(demo_parts) -> None:
    from ig_airflow.exceptions import ArtifactError

    artifact, baseline, _ = demo_parts
    meta = artifact.metadata.model_copy(
        update={"output": artifact.metadata.output.model_copy(update={"index": 3})}
    )
    with pytest.raises(ArtifactError, match="output index 3 is out of range: the model returns 1 output"):
        _backend(artifact, baseline, metadata=meta)


def test_explain_reads_and_writes_fsspec_uris(demo, demo_frames) -> None:
    """A non-local filesystem end to end (fsspec's memory://): input, output and manifest."""
    import fsspec

    from ig_airflow.config import parse_run_config
    from ig_airflow.run.local import run_explain

    fs = fsspec.filesystem("memory")
    with fs.open("/ig_test/rows.parquet", "wb") as fh:
        demo_frames[1].head(64).to_parquet(fh, index=False)
    config = parse_run_config(
        {
            "model": {"uri": demo["artifact"]},
            "data": {
                "input_uri": "memory://ig_test/rows.parquet",
                "id_columns": ["row_id"],
                "reference_uri": demo["train"],
            },
            "ray": {"enabled": False},
            "output": {"uri": "memory://ig_test/out"},
        }
    )
    manifest = run_explain(config)
    assert manifest["rows"]["explained"] == 64
    names = (p.rsplit("/", 1)[-1] for p in fs.ls("/ig_test/out", detail=False))
    assert sorted(n for n in names if not n.startswith(".")) == [  # the run folder's lease is hidden
        "attributions",
        "manifest.json",
        "shards",
    ]
    assert open_dataset("memory://ig_test/out/attributions").read_table().num_rows == 64


@pytest.mark.parametrize("layer", ["mlp.1", "embeddings.education"])
def test_layer_attributions_equal_plain_captum_layer_ig(demo_parts, layer: str) -> None:
    artifact, baseline, test = demo_parts
    rows = test.head(60)
    backend, wrapper = _backend(artifact, baseline, method="gausslegendre", internal_batch_size=700)
    at_layer = backend.layer(layer)
    numeric, categorical = encode_rows(rows, artifact.metadata.inputs)
    ours = at_layer.attribute(numeric, categorical, 24)
    x_num, x_cat = wrapper.tensors(numeric, categorical)
    reference = LayerIntegratedGradients(wrapper, wrapper.layer(layer)).attribute(
        (x_num, x_cat),
        baselines=(backend.base_num.expand_as(x_num), backend.base_cat.expand_as(x_cat)),
        n_steps=24,
        method="gausslegendre",
    )
    assert ours.attributions.shape == (60, at_layer.units)
    np.testing.assert_allclose(ours.attributions, reference.reshape(60, -1).double().numpy(), atol=1e-10)
    captum_engine = _backend(artifact, baseline, engine="captum", internal_batch_size=700)[0].layer(layer)
    np.testing.assert_allclose(
        captum_engine.attribute(numeric, categorical, 24).attributions, ours.attributions, atol=1e-10
    )


def test_layer_attributions_in_the_output_are_complete_at_a_cut_layer(demo_parts, demo_frames) -> None:
    artifact, _, test = demo_parts
    rows, train = test.head(300), demo_frames[0]
    out = explain_dataframe(
        rows, artifact.uri, id_columns=["row_id"], reference=train, layer_attributions=["mlp.1"]
    )
    units = [c for c in out.columns if c.startswith("layer__mlp.1__")]
    assert len(units) == 64  # the first hidden layer's width
    change = out["prediction"] - out["baseline_prediction"]
    # every path to the output runs through mlp.1, so its units' attributions add up to the change
    # (float32: a refined row's prediction may differ in the last bits between the two passes)
    np.testing.assert_allclose(out[units].sum(axis=1) - change, out["layer_delta__mlp.1"], atol=1e-6)
    assert (out["layer_delta__mlp.1"].abs() <= 0.01 * change.abs() + 1e-4).mean() >= 0.99
    assert out["layer_n_steps__mlp.1"].min() >= 9  # adaptive_trapezoid's first pass
    # the input-level columns are unchanged by asking for a layer
    plain = explain_dataframe(rows, artifact.uri, id_columns=["row_id"], reference=train)
    pd.testing.assert_frame_equal(out[plain.columns], plain)


def test_unknown_layer_lists_the_layers(demo_parts) -> None:
    from ig_airflow.exceptions import ArtifactError

    artifact, baseline, _ = demo_parts
    with pytest.raises(
        ArtifactError, match=r"unknown layer name 'mlp.9'.*other layers: \['numeric_input', 'mlp.0'"
    ):
        _backend(artifact, baseline)[0].layer("mlp.9")
