"""PyTorch models written the way tutorials write them, explained through the public API with no
wrapper written by the user (issue 16): a model taking a dict of named tensors with a scaler
fitted outside it, a model whose construction depends on the keyword order, a one-hot MLP on
``pd.get_dummies`` columns, and a 3-class softmax model explained for each row's top 2 classes.
Each is checked for completeness and against plain Captum on the same inputs (float64, 1e-5)."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pandas as pd
import pytest
import torch
from captum.attr import (
    IntegratedGradients,
    configure_interpretable_embedding_layer,
    remove_interpretable_embedding_layer,
)
from torch import nn

from ig_airflow import CategoricalFeature, InputSpec, explain_dataframe, save_artifact
from ig_airflow.trust import TRUSTED_MODULES_ENV

STEPS = 64
EXACT = {"n_steps": STEPS, "tolerance": None, "dtype": "float64", "method": "gausslegendre"}
COLORS = ["red", "green", "blue"]


@pytest.fixture(autouse=True)
def trust_this_module(monkeypatch) -> None:
    monkeypatch.setenv(TRUSTED_MODULES_ENV, f"ig_airflow.demo,{__name__}")


def rows(n: int = 24, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.normal(40, 12, n).round(),
            "hours": rng.normal(40, 8, n).round(),
            "color": rng.choice(COLORS, n),
        }
    )


def attributions(explained: pd.DataFrame, features: list[str]) -> np.ndarray:
    return explained[[f"attr__{f}" for f in features]].to_numpy()


def assert_complete(frame: pd.DataFrame, uri: str, **settings: object) -> None:
    """Completeness to 0.1% of each row's prediction change (+1e-5), by adaptive steps (ReLU kinks
    slow a fixed quadrature down), and the reported delta is the attributions' own."""
    explained = explain_dataframe(
        frame, uri, dtype="float64", tolerance=1e-3, atol=1e-5, max_steps=4096, **settings
    )
    assert explained["converged"].all(), explained[["delta", "n_steps"]]
    change = explained["prediction"] - explained["baseline_prediction"]
    total = explained[[c for c in explained.columns if c.startswith("attr__")]].sum(axis=1)
    np.testing.assert_allclose(total - change, explained["delta"], atol=1e-12)


class DictNet(nn.Module):
    """``forward(batch)`` with a dict of named ``[batch, 1]`` tensors, on standardised inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.color = nn.Embedding(4, 3)
        self.mlp = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 1))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        color = self.color(batch["color"]).squeeze(1)
        return self.mlp(torch.cat([batch["age"], batch["hours"], color], dim=1))


def test_dict_model_with_an_outside_scaler_equals_captum(tmp_path) -> None:
    torch.manual_seed(0)
    model, frame = DictNet().eval(), rows()
    mean, std = frame[["age", "hours"]].mean(), frame[["age", "hours"]].std()
    spec = InputSpec(
        numeric=[{"name": c, "center": mean[c], "scale": std[c]} for c in ("age", "hours")],
        categorical=[
            CategoricalFeature.from_index_map(
                "color", {"red": 1, "green": 2, "blue": 3}, oov_index="first", embedding_layer="color"
            )
        ],
        calling="dict",
    )

    def serve(frame: pd.DataFrame) -> np.ndarray:  # the user's own serving path
        batch = {
            c: torch.tensor(((frame[c] - mean[c]) / std[c]).to_numpy()[:, None]).float() for c in mean.index
        }
        batch["color"] = torch.tensor(
            frame["color"].map({"red": 1, "green": 2, "blue": 3}).to_numpy()[:, None]
        )
        with torch.no_grad():
            return torch.sigmoid(model(batch)).numpy().reshape(-1)

    save_artifact(
        model,
        str(tmp_path / "dict"),
        inputs=spec,
        example_rows=frame[:5],
        example_predictions=serve(frame[:5]),
    )
    explained = explain_dataframe(frame, str(tmp_path / "dict"), **EXACT)
    assert_complete(frame, str(tmp_path / "dict"))
    np.testing.assert_allclose(explained["prediction"], serve(frame), atol=1e-6)

    reference = model.double()
    scaled = {c: torch.tensor(((frame[c] - mean[c]) / std[c]).to_numpy()[:, None]) for c in mean.index}
    base = {c: torch.full_like(scaled[c], -mean[c] / std[c]) for c in mean.index}  # raw 0, scaled
    codes = torch.tensor(frame["color"].map({"red": 1, "green": 2, "blue": 3}).to_numpy()[:, None])
    embedded, base_embedded = (
        reference.color(codes).detach(),
        reference.color(torch.zeros_like(codes)).detach(),
    )
    interpretable = configure_interpretable_embedding_layer(reference, "color")
    try:

        def forward(age: torch.Tensor, hours: torch.Tensor, color: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(reference({"age": age, "hours": hours, "color": color})).squeeze(-1)

        expected = IntegratedGradients(forward).attribute(
            (scaled["age"], scaled["hours"], embedded),
            baselines=(base["age"], base["hours"], base_embedded),
            n_steps=STEPS,
            method="gausslegendre",
        )
    finally:
        remove_interpretable_embedding_layer(reference, interpretable)
    captum = np.column_stack([part.reshape(len(frame), -1).sum(1).numpy() for part in expected])
    np.testing.assert_allclose(attributions(explained, ["age", "hours", "color"]), captum, atol=1e-5)


class KeywordTower(nn.Module):
    """Builds one layer per keyword argument in the order given (``Net(**config["layers"])``)."""

    def __init__(self, **widths: int):
        super().__init__()
        self.color = nn.Embedding(4, 2)
        layers, width = [], 4
        for name, out in widths.items():
            layers += [(name, nn.Linear(width, out)), (f"{name}_act", nn.Tanh())]
            width = out
        self.tower = nn.Sequential(OrderedDict(layers))
        self.head = nn.Linear(width, 1)

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        return self.head(self.tower(torch.cat([x_num, self.color(x_cat[:, 0])], 1))).squeeze(-1)


def test_keyword_order_sensitive_model_equals_captum(tmp_path) -> None:
    torch.manual_seed(1)
    kwargs = {"wide": 6, "narrow": 3}  # not sorted: a sorted reload would build 3 then 6
    model, frame = KeywordTower(**kwargs).eval(), rows()
    spec = {
        "numeric": [{"name": "age", "scale": 10.0}, {"name": "hours", "scale": 10.0}],
        "categorical": [{"name": "color", "vocabulary": COLORS, "embedding_layer": "color"}],
    }
    save_artifact(model, str(tmp_path / "tower"), inputs=spec, model_kwargs=kwargs)
    explained = explain_dataframe(frame, str(tmp_path / "tower"), **EXACT)
    assert_complete(frame, str(tmp_path / "tower"))

    reference = model.double()
    x_num = torch.tensor(frame[["age", "hours"]].to_numpy() / 10.0)
    codes = torch.tensor(frame["color"].map({c: i + 1 for i, c in enumerate(COLORS)}).to_numpy()[:, None])
    interpretable = configure_interpretable_embedding_layer(reference, "color")
    try:
        embedded = interpretable.indices_to_embeddings(codes[:, 0]).detach()
        base_embedded = interpretable.indices_to_embeddings(
            torch.zeros(len(frame), dtype=torch.long)
        ).detach()

        def forward(x_num: torch.Tensor, color: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(reference(x_num, color[:, None]))

        expected = IntegratedGradients(forward).attribute(
            (x_num, embedded), baselines=(torch.zeros_like(x_num), base_embedded), n_steps=STEPS
        )
    finally:
        remove_interpretable_embedding_layer(reference, interpretable)
    captum = np.column_stack([expected[0].numpy(), expected[1].sum(1).numpy()])
    np.testing.assert_allclose(attributions(explained, ["age", "hours", "color"]), captum, atol=1e-5)


def test_one_hot_mlp_on_get_dummies_equals_captum_summed_per_feature(tmp_path) -> None:
    torch.manual_seed(2)
    frame = rows(32)
    dummies = pd.get_dummies(frame, columns=["color"], prefix_sep="=", dtype=float)  # age, hours, color=...
    model = nn.Sequential(nn.Linear(dummies.shape[1], 8), nn.ReLU(), nn.Linear(8, 1)).eval()
    spec = InputSpec(
        numeric=[{"name": "age", "center": 40, "scale": 12}, {"name": "hours", "center": 40, "scale": 8}],
        categorical=[{"name": "color", "vocabulary": sorted(COLORS), "oov_index": None}],
        calling="dense",
        dense_columns=list(dummies.columns),
    )
    dense = dummies.to_numpy().copy()
    dense[:, :2] = (dense[:, :2] - [40, 40]) / [12, 8]
    with torch.no_grad():
        served = torch.sigmoid(model(torch.tensor(dense[:6]).float())).numpy().reshape(-1)
    save_artifact(
        model, str(tmp_path / "onehot"), inputs=spec, example_rows=frame[:6], example_predictions=served
    )
    explained = explain_dataframe(frame, str(tmp_path / "onehot"), **EXACT)
    assert_complete(frame, str(tmp_path / "onehot"))

    baseline = np.zeros(dense.shape[1])  # raw 0 (scaled) and no colour set
    baseline[:2] = -np.array([40, 40]) / [12, 8]

    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(model.double()(x)).squeeze(-1)

    expected = (
        IntegratedGradients(forward)
        .attribute(torch.tensor(dense), baselines=torch.tensor(baseline)[None, :], n_steps=STEPS)
        .numpy()
    )
    captum = np.column_stack([expected[:, 0], expected[:, 1], expected[:, 2:].sum(1)])
    np.testing.assert_allclose(attributions(explained, ["age", "hours", "color"]), captum, atol=1e-5)
    one_row_blue = explained[frame["color"].to_numpy() == "blue"]["attr__color"].to_numpy()
    np.testing.assert_allclose(one_row_blue, expected[frame["color"].to_numpy() == "blue", 2], atol=1e-5)


class IrisNet(nn.Module):
    """A 3-class softmax classifier on 4 measurements, as the classic tutorial writes it."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(4, 10), nn.ReLU(), nn.Linear(10, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def test_three_class_softmax_top_2_equals_captum_per_target(tmp_path) -> None:
    torch.manual_seed(3)
    rng = np.random.default_rng(3)
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    frame = pd.DataFrame(rng.normal(3, 1.5, (20, 4)), columns=names)
    frame["flower_id"] = np.arange(20)
    model = IrisNet().eval()
    classes = ["setosa", "versicolor", "virginica"]
    with torch.no_grad():
        proba = torch.softmax(model(torch.tensor(frame[names].to_numpy()).float()), -1).numpy()
    save_artifact(
        model,
        str(tmp_path / "iris"),
        inputs={"numeric": [{"name": n} for n in names], "calling": "dense"},  # forward(x)
        output={"link": "softmax", "classes": classes, "target": {"top_k": 2}},
        example_rows=frame[names][:5],
        example_predictions=proba[:5],  # every class, as predict_proba gives them
    )
    explained = explain_dataframe(frame, str(tmp_path / "iris"), id_columns=["flower_id"], **EXACT)
    assert len(explained) == 2 * len(frame)
    assert explained["flower_id"].tolist() == np.repeat(frame["flower_id"], 2).tolist()
    assert explained["target_rank"].tolist() == [1, 2] * len(frame)
    top2 = np.argsort(-proba, axis=1)[:, :2]
    assert explained["target"].tolist() == [classes[c] for c in top2.reshape(-1)]
    np.testing.assert_allclose(
        explained["prediction"], np.take_along_axis(proba, top2, 1).reshape(-1), atol=1e-6
    )
    assert_complete(frame, str(tmp_path / "iris"))

    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(model.double()(x), -1)

    x = torch.tensor(frame[names].to_numpy())
    for rank in range(2):
        expected = IntegratedGradients(forward).attribute(
            x, baselines=torch.zeros_like(x), target=torch.tensor(top2[:, rank]), n_steps=STEPS
        )
        ours = attributions(explained[explained["target_rank"] == rank + 1], names)
        np.testing.assert_allclose(ours, expected.numpy(), atol=1e-5)


def test_multi_column_output_predicted_and_named_classes(tmp_path) -> None:
    torch.manual_seed(4)
    model = IrisNet().eval()
    names = ["a", "b", "c", "d"]
    frame = pd.DataFrame(np.random.default_rng(4).normal(size=(10, 4)), columns=names)
    save_artifact(
        model,
        str(tmp_path / "m"),
        inputs={"numeric": [{"name": n} for n in names], "calling": "dense"},
        output={"link": "softmax", "classes": ["x", "y", "z"], "target": "predicted"},
    )
    predicted = explain_dataframe(frame, str(tmp_path / "m"), **EXACT)
    with torch.no_grad():
        argmax = model(torch.tensor(frame.to_numpy()).float()).argmax(1).numpy()
    assert predicted["target"].tolist() == [["x", "y", "z"][c] for c in argmax]
    both = explain_dataframe(frame, str(tmp_path / "m"), target=["z", 0], **EXACT)  # a run's own target
    assert both["target"].tolist() == ["z", "x"] * len(frame)
    assert_complete(frame, str(tmp_path / "m"), target=["z", 0])
    z_only = explain_dataframe(frame, str(tmp_path / "m"), target="z", **EXACT)
    assert "target" not in z_only.columns
    np.testing.assert_allclose(
        attributions(z_only, names), attributions(both[both["target"] == "z"], names), atol=1e-9
    )


class PerColumnNet(nn.Module):
    """``forward(age, hours, color)``: one ``[batch]`` tensor per column."""

    def __init__(self, inner: DictNet):
        super().__init__()
        self.inner = inner

    def forward(self, age: torch.Tensor, hours: torch.Tensor, color: torch.Tensor) -> torch.Tensor:
        return self.inner({"age": age[:, None], "hours": hours[:, None], "color": color[:, None]})


def test_one_tensor_per_column_equals_the_same_model_taking_a_dict(tmp_path) -> None:
    torch.manual_seed(5)
    inner, frame = DictNet().eval(), rows()
    color = {"name": "color", "vocabulary": COLORS}
    by_dict = {
        "numeric": [{"name": "age"}, {"name": "hours"}],
        "categorical": [{**color, "embedding_layer": "color"}],
    }
    by_column = {**by_dict, "calling": "per_feature", "feature_shape": "vector"}
    by_column["categorical"] = [{**color, "embedding_layer": "inner.color"}]
    save_artifact(inner, str(tmp_path / "dict"), inputs={**by_dict, "calling": "dict"})
    save_artifact(
        PerColumnNet(inner).eval(), str(tmp_path / "columns"), inputs=by_column, loader="torch_export"
    )
    expected = explain_dataframe(frame, str(tmp_path / "dict"), **EXACT)
    got = explain_dataframe(frame, str(tmp_path / "columns"), **EXACT)
    features = ["age", "hours", "color"]
    np.testing.assert_allclose(attributions(got, features), attributions(expected, features), atol=1e-9)
