"""Expected Gradients (``baseline: {kind: distribution}``) on the trained demo model: equal to a
plain autograd loop over the same drawn baselines and alphas, a standard error that shrinks as
1/sqrt(k), complete per row in integral mode, the same on Keras, and the same draws for a row
in any batch."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from ig_airflow.artifacts import LoadedArtifact, load_artifact
from ig_airflow.config import BaselineSection, IGSection, parse_run_config
from ig_airflow.core.encoding import encode_rows
from ig_airflow.core.expected import ExpectedAttributions, ExpectedGradients, read_pool, row_draws
from ig_airflow.exceptions import ConfigError
from ig_airflow.run.explainer import explain_dataframe

FIXED = {"method": "gausslegendre", "n_steps": 8, "tolerance": None, "dtype": "float64"}


@pytest.fixture(scope="module")
def artifact(demo: dict[str, str]) -> LoadedArtifact:
    return load_artifact(demo["artifact"])


@pytest.fixture(scope="module")
def encoded(artifact: LoadedArtifact, demo_frames: Any) -> tuple[np.ndarray, np.ndarray]:
    return encode_rows(demo_frames[1].sample(200, random_state=5), artifact.metadata.inputs)


def expected_gradients(
    artifact: LoadedArtifact, reference: str, samples: int, path: str = "integral", **ig: Any
) -> ExpectedGradients:
    settings = BaselineSection(kind="distribution", samples=samples, path=path, pool_rows=500)
    pool = read_pool(artifact.metadata.inputs, settings, reference)
    ig_settings = IGSection(**ig)
    attributor = artifact.backend.attributor(
        artifact.model, artifact.metadata, pool.point("test"), ig_settings
    )
    return ExpectedGradients(attributor, pool, ig_settings)


def loop_reference(
    model: Any,
    calibration: Any,
    row: tuple[np.ndarray, np.ndarray],
    base: tuple[np.ndarray, np.ndarray],
    alphas,
    weights,
) -> np.ndarray:
    """sum_s w_s * dF/d(input) at b + alpha_s (x - b), times (x - b), one point at a time with plain
    autograd on the demo net (embeddings interpolated, summed over their dimensions)."""
    model = model.double()

    def embedded(categories: np.ndarray) -> list[torch.Tensor]:
        return [
            model.embeddings[name].weight[int(c)]
            for name, c in zip(model.categorical, categories, strict=True)
        ]

    x_num, b_num = torch.as_tensor(row[0]), torch.as_tensor(base[0])
    x_emb, b_emb = embedded(row[1]), embedded(base[1])
    total = np.zeros(len(row[0]) + len(row[1]))
    for alpha, weight in zip(alphas, weights, strict=True):
        numeric = (b_num + alpha * (x_num - b_num)).detach().requires_grad_(True)
        embeddings = [
            (b + alpha * (x - b)).detach().requires_grad_(True) for x, b in zip(x_emb, b_emb, strict=True)
        ]
        hidden = torch.cat([(numeric - model.numeric_mean) / model.numeric_std, *embeddings])
        score = torch.sigmoid(calibration.a * model.mlp(hidden[None, :])[0, 0] + calibration.b)
        grads = torch.autograd.grad(score, [numeric, *embeddings])
        total[: len(row[0])] += weight * (grads[0] * (x_num - b_num)).detach().numpy()
        for j, (g, x, b) in enumerate(zip(grads[1:], x_emb, b_emb, strict=True)):
            total[len(row[0]) + j] += weight * float((g * (x - b)).sum())
    return total


@pytest.mark.parametrize("path", ["integral", "random_point"])
def test_mean_attribution_equals_a_plain_loop_over_the_same_draws(artifact, demo, encoded, path) -> None:
    numeric, categorical = encoded[0][:5], encoded[1][:5]
    samples = 4
    engine = expected_gradients(artifact, demo["train"], samples, path, **FIXED)
    result = engine.explain(numeric, categorical)
    indices, draws = row_draws(numeric, categorical, len(engine.pool), samples, 0)
    nodes, weights = np.polynomial.legendre.leggauss(8)
    model = copy.deepcopy(artifact.model)
    for i in range(len(numeric)):
        per_sample = []
        for j, index in enumerate(indices[i]):
            base = (engine.pool.numeric[index], engine.pool.categorical[index])
            alphas, w = ((nodes + 1) / 2, weights / 2) if path == "integral" else ([draws[i, j]], [1.0])
            per_sample.append(
                loop_reference(
                    model, artifact.metadata.calibration, (numeric[i], categorical[i]), base, alphas, w
                )
            )
        np.testing.assert_allclose(result.attributions[i], np.mean(per_sample, axis=0), atol=1e-6, rtol=0)
        spread = np.std(per_sample, axis=0, ddof=1) / np.sqrt(samples)
        np.testing.assert_allclose(result.standard_error[i], spread, atol=1e-6, rtol=0)
    assert (
        np.abs(result.attributions).max() > 1e-2
        and result.n_steps.tolist() == [samples * (8 if path == "integral" else 1)] * 5
    )


def standard_error_ratio(artifact, reference: str, rows: tuple[np.ndarray, np.ndarray], path: str, **ig: Any):
    """SE(k=8) / SE(k=128): root mean square over rows and features, and the median over features
    of each feature's root mean square over rows."""
    errors = {
        k: expected_gradients(artifact, reference, k, path, **ig).explain(*rows).standard_error
        for k in (8, 128)
    }
    per_feature = np.sqrt(np.mean(errors[8] ** 2, axis=0) / np.mean(errors[128] ** 2, axis=0))
    return np.sqrt(np.mean(errors[8] ** 2) / np.mean(errors[128] ** 2)), np.median(per_feature)


def test_standard_error_shrinks_as_one_over_sqrt_k(artifact, demo, encoded) -> None:
    """SE(k=8) / SE(k=128) is sqrt(16) = 4 within 20%. Path integrals (a fixed 4-point rule: the
    spread is the baselines'); the random-point estimator's per-sample attributions are heavy
    tailed (a gradient at one point), so its overall ratio varies more: the median over features."""
    four_points = {"method": "gausslegendre", "n_steps": 4, "tolerance": None}
    overall, by_feature = standard_error_ratio(
        artifact, demo["train"], (encoded[0][:60], encoded[1][:60]), "integral", **four_points
    )
    assert 3.2 <= overall <= 4.8 and 3.2 <= by_feature <= 4.8, (overall, by_feature)
    _, by_feature = standard_error_ratio(artifact, demo["train"], encoded, "random_point")
    assert 3.2 <= by_feature <= 4.8, by_feature


def test_integral_mode_is_complete_per_row_against_the_mean_gap(artifact, demo, encoded) -> None:
    numeric, categorical = encoded[0][:60], encoded[1][:60]
    engine = expected_gradients(artifact, demo["train"], 8)
    result = engine.explain(numeric, categorical)
    assert isinstance(result, ExpectedAttributions) and result.converged.all()
    predict = artifact.backend.predict
    at_input = predict(artifact.model, artifact.metadata, numeric, categorical)[:, 0]
    at_pool = predict(artifact.model, artifact.metadata, engine.pool.numeric, engine.pool.categorical)[:, 0]
    indices, _ = row_draws(numeric, categorical, len(engine.pool), 8, 0)
    gaps = at_input[:, None] - at_pool[indices]  # [rows, k]: F(x) - F(b_j)
    np.testing.assert_allclose(result.prediction, at_input, atol=1e-5)
    np.testing.assert_allclose(result.baseline_prediction, at_pool[indices].mean(axis=1), atol=1e-5)
    error = result.attributions.sum(axis=1) - gaps.mean(axis=1)
    assert (np.abs(error) <= 1e-4 + 1e-5 + 0.01 * np.abs(gaps).mean(axis=1)).all()  # float32 scores: 1e-5
    np.testing.assert_allclose(error, result.delta, atol=1e-5)
    assert np.median(result.completeness_error) < 0.01


def test_the_same_row_gets_the_same_attributions_in_any_batch(artifact, demo, encoded) -> None:
    numeric, categorical = encoded[0][:9], encoded[1][:9]
    engine = expected_gradients(artifact, demo["train"], 6, batch_rows=18)  # 3 rows (18 pairs) per block
    whole = engine.explain(numeric, categorical)
    order = np.random.default_rng(1).permutation(len(numeric))
    parts = [engine.explain(numeric[p], categorical[p]) for p in np.array_split(order, 3)]
    draws = row_draws(numeric, categorical, len(engine.pool), 6, 0)
    shuffled = row_draws(numeric[order], categorical[order], len(engine.pool), 6, 0)
    for drawn, again in zip(draws, shuffled, strict=True):
        np.testing.assert_array_equal(again, drawn[order])  # the same baselines and alphas, bit for bit
    attributions = np.concatenate([p.attributions for p in parts])
    np.testing.assert_allclose(
        attributions, whole.attributions[order], atol=1e-7, rtol=0
    )  # float32 round-off
    np.testing.assert_array_equal(np.concatenate([p.n_steps for p in parts]), whole.n_steps[order])
    other_seed = read_pool(
        artifact.metadata.inputs, BaselineSection(kind="distribution", seed=1), demo["train"]
    )
    assert not np.array_equal(other_seed.numeric[:50], engine.pool.numeric[:50])


def test_keras_twin_gives_the_same_mean_attributions(artifact, demo, demo_frames, tmp_path) -> None:
    pytest.importorskip("keras")
    from conftest import keras_twin

    twin = keras_twin(artifact, tmp_path / "twin")
    rows = demo_frames[1].sample(20, random_state=9)
    reference = demo_frames[0].sample(300, random_state=0)
    baseline = {"kind": "distribution", "samples": 8}
    outputs = [
        explain_dataframe(
            rows, a, id_columns=["row_id"], baseline=baseline, reference=reference, n_steps=32, tolerance=None
        )
        for a in (artifact, twin)
    ]
    columns = [c for c in outputs[0].columns if c.startswith("attr")]
    assert len(columns) == 28  # the mean and its standard error per feature
    np.testing.assert_allclose(
        outputs[1][columns].to_numpy(), outputs[0][columns].to_numpy(), atol=1e-4, rtol=0
    )
    np.testing.assert_allclose(outputs[1].baseline_prediction, outputs[0].baseline_prediction, atol=1e-5)


def test_distribution_needs_reference_data_and_no_hidden_layers(artifact, demo_frames) -> None:
    raw = {
        "model": {"uri": "m"},
        "data": {"input_uri": "rows.parquet"},
        "output": {"uri": "out"},
        "baseline": {"kind": "distribution", "samples": 16},
    }
    with pytest.raises(ConfigError, match=r"data.reference_uri"):
        parse_run_config(raw, "run.yaml")
    raw["data"]["reference_uri"] = "train.parquet"
    with pytest.raises(
        ConfigError, match=r"ig.layer_attributions: not supported with baseline.kind: distribution"
    ):
        parse_run_config({**raw, "ig": {"layer_attributions": ["mlp.1"]}}, "run.yaml")
    with pytest.raises(ConfigError, match=r"baseline: .*numeric: not used with kind: distribution"):
        parse_run_config({**raw, "baseline": {"kind": "distribution", "numeric": "median"}}, "run.yaml")
    with pytest.raises(ConfigError, match=r"baseline.samples: Input should be greater than or equal to 2"):
        parse_run_config({**raw, "baseline": {"kind": "distribution", "samples": 1}}, "run.yaml")
    assert parse_run_config(raw, "run.yaml").baseline.samples == 16
    rows = demo_frames[1].head(3)
    with pytest.raises(ConfigError, match=r"data.reference_uri"):
        explain_dataframe(rows, artifact, baseline={"kind": "distribution"})


def test_values_override_every_drawn_baseline(artifact, demo, demo_frames) -> None:
    settings = BaselineSection(kind="distribution", values={"age": 40, "sex": "Female"}, pool_rows=50)
    pool = read_pool(artifact.metadata.inputs, settings, demo["train"])
    spec = artifact.metadata.inputs
    assert (pool.numeric[:, spec.numeric_names.index("age")] == 40).all()
    sex = spec.categorical[spec.categorical_names.index("sex")]
    assert (pool.categorical[:, spec.categorical_names.index("sex")] == sex.index_map()["Female"]).all()
    rows = demo_frames[1].head(4).assign(age=40.0)
    out = explain_dataframe(
        rows, artifact, baseline=settings.model_dump(), reference=pd.read_parquet(demo["train"])
    )
    np.testing.assert_allclose(out["attr__age"], 0.0, atol=1e-12)  # the row is at the baseline's value
    np.testing.assert_allclose(out["attr_se__age"], 0.0, atol=1e-12)
