"""The quality metrics agree with Captum's on the PyTorch demo model (``captum.metrics.infidelity``
and ``sensitivity_max``, the same perturbation function and seed) and give the same numbers
through the Keras backend on a twin model (the same weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.metrics import infidelity as captum_infidelity
from captum.metrics import sensitivity_max as captum_sensitivity_max
from conftest import keras_twin

from ig_airflow.artifacts import load_artifact
from ig_airflow.config import IGSection
from ig_airflow.core.baselines import resolve_baseline
from ig_airflow.core.encoding import encode_rows
from ig_airflow.quality import metrics
from ig_airflow.quality.stage import explanation_function, scorer
from ig_airflow.run.explainer import BatchExplainer

keras = pytest.importorskip("keras")  # the [tensorflow] extra; installed by scripts/setup.sh
SEED, SAMPLES = 7, 6


@pytest.fixture(scope="module")
def artifacts(demo, tmp_path_factory) -> dict[str, object]:
    """The PyTorch demo artifact and its Keras twin (the same weights, saved and reloaded)."""
    torch_artifact = load_artifact(demo["artifact"])
    return {
        "pytorch": torch_artifact,
        "keras": keras_twin(torch_artifact, tmp_path_factory.mktemp("twin") / "m"),
    }


@pytest.fixture(scope="module")
def rows(demo_frames):
    return demo_frames[1].sample(48, random_state=4)


def setup(artifact, demo, rows):
    """Explainer, encoded rows, their attributions, the scoring and explanation functions."""
    meta = artifact.metadata
    baseline = resolve_baseline(meta.inputs, meta.baseline, demo["train"])
    explainer = BatchExplainer(artifact, IGSection(n_steps=32, tolerance=None), baseline, ["row_id"])
    numeric, categorical = encode_rows(rows[meta.inputs.feature_names], meta.inputs)
    targets = np.zeros(len(rows), dtype=np.int64)  # one output: every row explains column 0
    explain = explanation_function(explainer, targets)
    attributions = explain(numeric, categorical, np.arange(len(rows)))
    columns = metrics.FeatureColumns.of(meta.inputs, baseline.numeric, baseline.categorical)
    return explainer, numeric, categorical, attributions, scorer(explainer, targets), explain, columns


def split(matrix: np.ndarray, columns: metrics.FeatureColumns) -> tuple[torch.Tensor, torch.Tensor]:
    """A [N, F] feature matrix as Captum's (numeric, categorical) input tuple."""
    numeric = matrix[
        :, [int(np.flatnonzero(columns.numeric == j)[0]) for j in range(columns.numeric.max() + 1)]
    ]
    cat = [int(np.flatnonzero(columns.categorical == j)[0]) for j in range(columns.categorical.max() + 1)]
    return torch.as_tensor(numeric), torch.as_tensor(matrix[:, cat])


def test_infidelity_agrees_with_captum(artifacts, demo, rows) -> None:
    _, numeric, categorical, attributions, score, _, columns = setup(artifacts["pytorch"], demo, rows)
    perturb = metrics.baseline_mask_perturbation(columns, 0.3)

    def forward(num: torch.Tensor, cat: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(score(num.numpy(), cat.numpy(), np.zeros(len(num), dtype=np.int64)))

    def captum_perturb(inputs: tuple[torch.Tensor, torch.Tensor]):
        mask, num, cat = perturb(inputs[0].numpy(), inputs[1].numpy(), np.random.default_rng(SEED))
        return split(mask, columns), (torch.as_tensor(num), torch.as_tensor(cat))

    inputs = (torch.as_tensor(numeric), torch.as_tensor(categorical))
    for normalize in (False, True):
        ours = metrics.infidelity(
            score,
            numeric,
            categorical,
            attributions,
            perturb,
            SAMPLES,
            np.random.default_rng(SEED),
            normalize,
        )
        theirs = captum_infidelity(
            forward,
            captum_perturb,
            inputs,
            split(attributions, columns),
            n_perturb_samples=SAMPLES,
            normalize=normalize,
        )
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-6, atol=1e-9)
        assert ours.max() > 0


def test_max_sensitivity_agrees_with_captum(artifacts, demo, rows) -> None:
    _, numeric, categorical, attributions, _, explain, columns = setup(artifacts["pytorch"], demo, rows)
    perturb = metrics.uniform_perturbation(0.05 * numeric.std(axis=0))

    def explanation(inputs: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        num, cat = (tensor.numpy() for tensor in inputs)
        return split(explain(num, cat, np.zeros(len(num), dtype=np.int64)), columns)

    def captum_perturb(inputs: tuple[torch.Tensor, torch.Tensor], radius: float):
        return torch.as_tensor(perturb(inputs[0].numpy(), np.random.default_rng(SEED))), inputs[1]

    ours = metrics.max_sensitivity(
        explain, numeric, categorical, attributions, perturb, SAMPLES, np.random.default_rng(SEED)
    )
    inputs = (torch.as_tensor(numeric), torch.as_tensor(categorical))
    theirs = captum_sensitivity_max(explanation, inputs, captum_perturb, n_perturb_samples=SAMPLES)
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-6, atol=1e-9)
    assert ours.max() > 0


def test_the_keras_twin_gives_the_same_numbers(artifacts, demo, rows) -> None:
    measured = {}
    for framework, artifact in artifacts.items():
        _, numeric, categorical, attributions, score, explain, columns = setup(artifact, demo, rows)
        rng = np.random.default_rng(SEED)
        perturb = metrics.baseline_mask_perturbation(columns, 0.3)
        steps = metrics.curve_steps(columns.count, 21)
        order = metrics.order_by_magnitude(attributions)
        measured[framework] = {
            "attributions": attributions,
            "infidelity": metrics.infidelity(
                score, numeric, categorical, attributions, perturb, SAMPLES, rng
            ),
            "sensitivity": metrics.max_sensitivity(
                explain, numeric, categorical, attributions, metrics.uniform_perturbation(0.05), SAMPLES, rng
            ),
            "deletion": metrics.removal_curves(score, numeric, categorical, columns, order, steps),
            "permutation": metrics.permutation_importance(score, numeric, categorical, columns, rng),
        }
    ours, twin = measured["pytorch"], measured["keras"]
    np.testing.assert_allclose(twin["attributions"], ours["attributions"], atol=1e-4)
    np.testing.assert_allclose(twin["deletion"], ours["deletion"], atol=1e-5)
    np.testing.assert_allclose(twin["permutation"], ours["permutation"], atol=1e-5)
    np.testing.assert_allclose(twin["infidelity"], ours["infidelity"], rtol=1e-3, atol=1e-7)
    np.testing.assert_allclose(twin["sensitivity"], ours["sensitivity"], rtol=1e-2, atol=1e-4)


def test_rank_correlation_over_the_features_that_moved() -> None:
    a = np.array([[3.0, 2.0, 1.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0, 0.0]])
    b = np.array([[1.0, 2.0, 3.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0, 9.0]])
    everything = metrics.rank_correlation(a, b)
    moved = metrics.rank_correlation(a, b, np.array([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], dtype=bool))
    assert moved[0] == pytest.approx(-1.0) and np.isnan(moved[1])  # fewer than 3 features moved
    assert everything[0] > moved[0]  # the shared zeros alone make two rankings look alike
    assert everything[1] == pytest.approx(0.0)  # ranks 2,3,4,5,1 against 1,2,3,4,5
