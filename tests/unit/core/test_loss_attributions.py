"""Explaining the loss (``ig.loss``): completeness against each row's own label, agreement with
plain Captum on the same per-row loss, the Keras twin, a corrupted feature found by its loss
importance, cross-entropy and squared error, and the errors for labels that do not map."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from captum.attr import IntegratedGradients
from conftest import keras_twin
from pydantic import ValidationError
from torch import nn

from ig_airflow import explain_dataframe, save_artifact
from ig_airflow.artifacts import load_artifact
from ig_airflow.config import IGSection, RunConfig
from ig_airflow.core.baselines import resolve_baseline
from ig_airflow.core.encoding import encode_rows
from ig_airflow.core.loss import EPS, LossAttributor, row_loss, sampled_rows
from ig_airflow.exceptions import InputDataError
from ig_airflow.run.explainer import BatchExplainer
from ig_airflow.run.loss import Labels
from ig_airflow.trust import TRUSTED_MODULES_ENV

FIXED = {"method": "gausslegendre", "n_steps": 32, "tolerance": None, "dtype": "float64"}


@pytest.fixture(autouse=True)
def trust_this_module(monkeypatch) -> None:
    monkeypatch.setenv(TRUSTED_MODULES_ENV, f"ig_airflow.demo,{__name__}")


@pytest.fixture(scope="module")
def artifact(demo):
    return load_artifact(demo["artifact"])


@pytest.fixture(scope="module")
def baseline(demo, artifact):
    return resolve_baseline(artifact.metadata.inputs, artifact.metadata.baseline, demo["train"])


@pytest.fixture(scope="module")
def rows(demo_frames) -> pd.DataFrame:
    return demo_frames[1].sample(120, random_state=5).reset_index(drop=True)


def explain(artifact, baseline, rows: pd.DataFrame, **settings: Any) -> pd.DataFrame:
    explainer = BatchExplainer(
        artifact, IGSection(loss="auto", **settings), baseline, ["row_id"], labels=Labels("label")
    )
    return explainer.explain(rows)[0].to_pandas()


@pytest.fixture(scope="module")
def explained(artifact, baseline, rows) -> pd.DataFrame:
    """The rows' predictions and losses explained at the default settings."""
    return explain(artifact, baseline, rows)


def loss_attributions(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[[c for c in frame.columns if c.startswith("loss_attr__")]]


def test_loss_attributions_add_up_to_the_change_in_each_rows_loss(explained, rows) -> None:
    change = explained["loss"] - explained["loss_at_baseline"]
    total = loss_attributions(explained).sum(axis=1)
    np.testing.assert_allclose(total - change, explained["loss_delta"], atol=1e-9)
    bound = 1e-4 + 0.01 * np.abs(change)  # the default tolerance: atol 1e-4 nats + 1% of the change
    assert explained["loss_converged"].all() and (np.abs(explained["loss_delta"]) <= bound).all()
    p, y = explained["prediction"].to_numpy(), rows["label"].to_numpy()
    log_loss = -np.log(np.where(y == 1, p, 1 - p))  # the calibrated probability against the label
    np.testing.assert_allclose(explained["loss"], log_loss, atol=1e-4)
    p0 = explained["baseline_prediction"].to_numpy()
    np.testing.assert_allclose(
        explained["loss_at_baseline"], -np.log(np.where(y == 1, p0, 1 - p0)), atol=1e-5
    )
    assert (
        explained["attr__age"].notna().all() and np.abs(loss_attributions(explained).to_numpy()).max() > 0.1
    )


def test_equals_captum_on_a_wrapper_computing_the_same_loss(artifact, baseline, rows) -> None:
    """Plain Captum ``IntegratedGradients`` on the model's numeric inputs and embedding outputs,
    its forward the per-row log loss of the calibrated score: the same maths, 1e-6 in float64."""
    settings = IGSection(**FIXED)
    parent = artifact.backend.attributor(artifact.model, artifact.metadata, baseline, settings)
    numeric, categorical = encode_rows(rows, artifact.metadata.inputs)
    labels = rows["label"].to_numpy(np.float64)
    loss = row_loss("log_loss", artifact.metadata, 1, 1.0)
    ours = LossAttributor(parent, loss, labels).attribute(numeric, categorical, FIXED["n_steps"])

    x_num, x_cat = parent.tensors(numeric, categorical)
    embeddings, _ = parent.embed(x_num, x_cat)
    y = torch.as_tensor(labels)

    def forward(numbers: torch.Tensor, *looked_up: torch.Tensor) -> torch.Tensor:
        times = len(numbers) // len(rows)
        with parent.adapter.substitute(parent.layers, looked_up):
            p = parent.adapter(numbers, x_cat.repeat(times, 1))[:, 0]
        chosen = torch.where(y.repeat(times) == 1, p, 1 - p)
        return -torch.log(EPS + (1 - 2 * EPS) * chosen)

    bases = [parent.base_num, *parent.base_embeddings]
    values = [x_num, *embeddings]
    expected = IntegratedGradients(forward).attribute(
        tuple(values),
        baselines=tuple(b.expand_as(v) for b, v in zip(bases, values, strict=True)),
        n_steps=FIXED["n_steps"],
        method="gausslegendre",
    )
    captum = np.column_stack(
        [expected[0].detach().numpy(), *[e.detach().sum(1).numpy() for e in expected[1:]]]
    )
    np.testing.assert_allclose(ours.attributions, captum, atol=1e-6, rtol=0)
    assert np.abs(captum).max() > 0.1


def test_the_keras_twin_gives_the_same_loss_attributions(artifact, baseline, rows, tmp_path) -> None:
    twin = keras_twin(artifact, tmp_path / "twin")
    settings = {"n_steps": 32, "tolerance": None}  # float32, as the prediction's parity test
    ours_torch, ours_tf = (explain(a, baseline, rows.head(40), **settings) for a in (artifact, twin))
    np.testing.assert_allclose(
        loss_attributions(ours_tf).to_numpy(), loss_attributions(ours_torch).to_numpy(), atol=1e-4, rtol=1e-3
    )
    np.testing.assert_allclose(ours_tf["loss"], ours_torch["loss"], atol=1e-4, rtol=1e-4)


class Linear(nn.Module):
    """``logit = 4 x0 + 4 x1 + 0 x2``: right on every row of ``y = x0 + x1 > 0``; x2 is noise."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def linear_artifact(uri: str) -> str:
    model = Linear().eval()
    with torch.no_grad():
        model.linear.weight.copy_(torch.tensor([[4.0, 4.0, 0.0]]))
        model.linear.bias.zero_()
    inputs = {"numeric": [{"name": n} for n in ("x0", "x1", "x2")], "calling": "dense"}
    save_artifact(model, uri, inputs=inputs, baseline={"numeric": "zero"})
    return uri


def test_a_corrupted_feature_leads_the_loss_importance(tmp_path) -> None:
    """The same model on clean rows (right on every row: every feature lowers the loss, the
    noise feature by nothing) and on rows whose x0 was corrupted (redrawn, labels kept): x0 then
    raises the loss most, though the prediction's importance cannot tell x0 from x1."""
    uri = linear_artifact(str(tmp_path / "linear"))
    rng = np.random.default_rng(0)
    clean = pd.DataFrame(rng.normal(size=(300, 3)), columns=["x0", "x1", "x2"])
    clean["y"] = (clean["x0"] + clean["x1"] > 0).astype(int)
    corrupted = clean.assign(x0=rng.normal(size=len(clean)))
    means = {}
    for name, frame in (("clean", clean), ("corrupted", corrupted)):
        explained = explain_dataframe(frame, uri, label_column="y", loss="auto", dtype="float64")
        assert explained["loss_converged"].all()
        means[name] = loss_attributions(explained).mean()
        means[name + "_prediction"] = explained[["attr__x0", "attr__x1"]].abs().mean()
    assert (means["clean"][["loss_attr__x0", "loss_attr__x1"]] < -0.1).all()
    assert means["clean"]["loss_attr__x2"] == 0.0
    assert means["corrupted"].idxmax() == "loss_attr__x0" and means["corrupted"]["loss_attr__x0"] > 0.3
    assert means["corrupted"]["loss_attr__x1"] < 0
    prediction = means["corrupted_prediction"]
    assert abs(prediction["attr__x0"] / prediction["attr__x1"] - 1) < 0.2  # no clue in the prediction


class ThreeClass(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(2, 6), nn.Tanh(), nn.Linear(6, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def test_cross_entropy_of_class_names_and_squared_error_of_a_raw_output(tmp_path) -> None:
    torch.manual_seed(1)
    frame = pd.DataFrame(np.random.default_rng(1).normal(size=(40, 2)), columns=["a", "b"])
    frame["species"] = np.random.default_rng(2).choice(["x", "y", "z"], len(frame))
    inputs = {"numeric": [{"name": "a"}, {"name": "b"}], "calling": "dense"}
    model = ThreeClass().eval()
    classes = {"link": "softmax", "classes": ["x", "y", "z"], "target": "predicted"}
    save_artifact(model, str(tmp_path / "three"), inputs=inputs, output=classes)
    explained = explain_dataframe(
        frame, str(tmp_path / "three"), label_column="species", loss="auto", dtype="float64"
    )
    with torch.no_grad():
        proba = torch.softmax(model.double()(torch.tensor(frame[["a", "b"]].to_numpy())), -1).numpy()
    chosen = proba[np.arange(len(frame)), frame["species"].map({"x": 0, "y": 1, "z": 2}).to_numpy()]
    np.testing.assert_allclose(explained["loss"], -np.log(chosen), atol=1e-6)
    change = explained["loss"] - explained["loss_at_baseline"]
    np.testing.assert_allclose(
        loss_attributions(explained).sum(axis=1) - change, explained["loss_delta"], atol=1e-9
    )
    assert explained["loss_converged"].all()

    raw = nn.Sequential(nn.Linear(2, 1)).eval()
    save_artifact(raw, str(tmp_path / "raw"), inputs=inputs, output={"explain": "logit"})
    frame["value"] = frame["a"] * 3.0
    regression = explain_dataframe(
        frame, str(tmp_path / "raw"), label_column="value", loss="auto", dtype="float64"
    )
    np.testing.assert_allclose(
        regression["loss"], (regression["prediction"] - frame["value"]) ** 2, atol=1e-9
    )
    linear = (regression["loss"] - regression["loss_at_baseline"]) - loss_attributions(regression).sum(axis=1)
    np.testing.assert_allclose(linear, -regression["loss_delta"], atol=1e-9)
    assert np.abs(regression["loss_delta"]).max() < 1e-6  # a quadratic of a linear model: exact


def test_labels_that_do_not_map_fail_naming_the_column_and_value(artifact, baseline, rows, explained) -> None:
    with pytest.raises(InputDataError, match=r"label column 'label': value 2 does not map"):
        explain(artifact, baseline, rows.head(8).assign(label=rows["label"].head(8).replace({0: 2})))
    with pytest.raises(InputDataError, match=r"column\(s\) \['label'\] not in the input"):
        explain(artifact, baseline, rows.head(8).drop(columns="label"))
    strings = rows.head(30).assign(label=rows["label"].head(30).map({0: "<=50K", 1: ">50K"}))
    with pytest.raises(InputDataError, match=r"value '(<=|>)50K' does not map.*data.positive_label"):
        explain(artifact, baseline, strings.head(8))
    named = (
        BatchExplainer(artifact, IGSection(loss="auto"), baseline, ["row_id"], labels=Labels("label", ">50K"))
        .explain(strings)[0]
        .to_pandas()
    )
    np.testing.assert_allclose(named["loss"], explained["loss"].head(30), atol=1e-6)
    with pytest.raises(
        ValidationError, match=r"ig.loss: auto explains each row's loss; set data.label_column"
    ):
        RunConfig.model_validate(
            {
                "model": {"uri": "m"},
                "data": {"input_uri": "d"},
                "ig": {"loss": "auto"},
                "output": {"uri": "o"},
            }
        )


def test_unlabelled_and_unsampled_rows_get_their_prediction_explained_and_null_loss(
    artifact, baseline, rows, explained
) -> None:
    some, full = rows.head(60), explained.head(60)
    labels = some["label"].astype("float64")
    labels[::3] = np.nan
    partly = explain(artifact, baseline, some.assign(label=labels))
    missing = labels.isna().to_numpy()
    assert partly.loc[missing, ["loss", "loss_attr__age", "loss_converged"]].isna().all().all()
    assert partly.loc[~missing, "loss"].notna().all() and partly["attr__age"].notna().all()
    # the same rows in another batch (float32: another chunking moves the last digits)
    np.testing.assert_allclose(partly.loc[~missing, "loss"], full.loc[~missing, "loss"], atol=1e-6)
    np.testing.assert_allclose(partly["attr__age"], full["attr__age"], atol=1e-6)
    sampled = explain(artifact, baseline, some, loss_sample=0.3)["loss"].notna().to_numpy()
    numeric, categorical = encode_rows(some, artifact.metadata.inputs)
    assert (sampled == sampled_rows(numeric, categorical, 0.3)).all() and 0.1 < sampled.mean() < 0.5
    sample = explain(artifact, baseline, some.iloc[::-1], loss_sample=0.3)["loss"].notna().to_numpy()
    assert (sample[::-1] == sampled).all()  # the row's values choose it, not its position
    none = explain(artifact, baseline, rows.head(4).assign(label=None))
    assert none["loss"].isna().all() and none["prediction"].notna().all()
