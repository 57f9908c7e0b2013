"""The calling contract, checked when an artifact is saved and when it is loaded: models written
as tutorials write them, example rows with the predictions the user's own code made, and the
mistakes that used to pass silently (vocabulary order, calling convention, kwargs order)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from ig_airflow import explain_dataframe
from ig_airflow.artifacts import load_artifact, save_artifact
from ig_airflow.exceptions import ArtifactError
from ig_airflow.spec import METADATA_FILE
from ig_airflow.trust import TRUSTED_MODULES_ENV

USER_ORDER = ["red", "green", "blue"]  # how the user's own pipeline indexes colours (1, 2, 3)


@pytest.fixture(autouse=True)
def trust_this_module(monkeypatch) -> None:
    """The models below live in this test module: the deployment trusts it, as documented."""
    monkeypatch.setenv(TRUSTED_MODULES_ENV, f"ig_airflow.demo,{__name__}")


def spec(vocabulary: list[str]) -> dict:
    return {
        "numeric": [{"name": "size"}, {"name": "weight"}],
        "categorical": [{"name": "color", "vocabulary": vocabulary, "embedding_layer": "color"}],
    }


class ColorNet(nn.Module):
    """A tabular net as tutorials write it: ``forward(x_num, x_cat)``."""

    def __init__(self, activations: dict[str, str] | None = None):
        super().__init__()
        self.color = nn.Embedding(4, 3)
        self.hidden = nn.Linear(5, 8)
        self.out = nn.Linear(8, 1)
        self.activation = nn.Tanh()

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        features = torch.cat([x_num, self.color(x_cat[:, 0])], dim=1)
        return self.out(self.activation(self.hidden(features))).squeeze(-1)


class OrderedBlocks(nn.Module):
    """Builds one block per keyword argument, in the order the arguments are given (a common
    pattern: ``Net(**config["layers"])``); reordering them keeps every shape and changes the model."""

    def __init__(self, **activations: str):
        super().__init__()
        self.color = nn.Embedding(4, 3)
        kinds = {"tanh": nn.Tanh, "relu": nn.ReLU, "sigmoid": nn.Sigmoid}
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(5, 5), kinds[a]()) for a in activations.values())
        self.out = nn.Linear(5, 1)

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        hidden = torch.cat([x_num, self.color(x_cat[:, 0])], dim=1)
        for block in self.blocks:
            hidden = block(hidden)
        return self.out(hidden).squeeze(-1)


class CategoriesFirst(ColorNet):
    """The calling convention reversed: ``forward(x_cat, x_num)``."""

    def forward(self, x_cat: torch.Tensor, x_num: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x_num, x_cat)


class TakesADict(ColorNet):
    def forward(self, features: dict) -> torch.Tensor:  # type: ignore[override]
        return super().forward(features["num"], features["cat"])


def rows(n: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "size": rng.normal(size=n),
            "weight": rng.normal(size=n),
            "color": [USER_ORDER[i % 3] for i in range(n)],
        }
    )


def users_own_predictions(model: nn.Module, frame: pd.DataFrame) -> np.ndarray:
    """The user's serving path: their own encoding (USER_ORDER -> 1, 2, 3) and a sigmoid."""
    codes = frame["color"].map({c: i + 1 for i, c in enumerate(USER_ORDER)}).to_numpy()
    with torch.no_grad():
        logits = model(
            torch.tensor(np.ascontiguousarray(frame[["size", "weight"]].to_numpy()), dtype=torch.float32),
            torch.tensor(codes)[:, None],
        )
    return torch.sigmoid(logits).numpy()


def test_model_saved_with_its_own_vocabulary_order_reproduces_and_explains(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, frame = ColorNet().eval(), rows()
    save_artifact(
        model,
        str(tmp_path / "ok"),
        inputs=spec(USER_ORDER),
        example_rows=frame,
        example_predictions=users_own_predictions(model, frame),
    )
    loaded = load_artifact(str(tmp_path / "ok"))
    assert loaded.metadata.examples.rows == 12 and "examples.parquet" in loaded.metadata.files
    explained = explain_dataframe(frame, loaded, n_steps=64)
    np.testing.assert_allclose(explained["prediction"], users_own_predictions(model, frame), atol=1e-6)


def test_wrong_vocabulary_order_is_refused_at_save_naming_the_feature(tmp_path: Path, caplog) -> None:
    torch.manual_seed(0)
    model, frame = ColorNet().eval(), rows()
    caplog.set_level(logging.INFO)
    started = time.perf_counter()
    with pytest.raises(ArtifactError) as refused:
        save_artifact(
            model,
            str(tmp_path / "sorted"),
            inputs=spec(sorted(USER_ORDER)),  # ['blue', 'green', 'red']: not how the model was trained
            example_rows=frame,
            example_predictions=users_own_predictions(model, frame),
        )
    assert time.perf_counter() - started < 5 and len(caplog.records) < 30
    message = str(refused.value)
    assert "does not reproduce the example predictions" in message and "first row 0" in message
    assert (
        "Likely culprit: feature 'color'" in message
        and "in order of first appearance ['red', 'green', 'blue'] with the out-of-vocabulary index at 0"
        in message
    )
    assert not (tmp_path / "sorted").exists()  # nothing published


def test_pandas_category_codes_order_is_found(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, frame = ColorNet().eval(), rows().iloc[::-1].reset_index(drop=True)
    frame["color"] = pd.Categorical(frame["color"], categories=USER_ORDER)
    with pytest.raises(
        ArtifactError, match=r"indexed in the order of the pandas categories \['red', 'green', 'blue'\]"
    ):
        save_artifact(
            model,
            str(tmp_path / "a"),
            inputs=spec(sorted(USER_ORDER)),
            example_rows=frame,
            example_predictions=users_own_predictions(model, frame),
        )


@pytest.mark.parametrize(
    ("model_class", "error"),
    [(CategoriesFirst, "RuntimeError|IndexError"), (TakesADict, "TypeError")],
)
def test_mismatched_calling_convention_is_refused_at_save_with_the_models_message(
    tmp_path, model_class, error
) -> None:
    with pytest.raises(
        ArtifactError,
        match=rf"fails when called as ig_airflow calls it, with x_num float \[batch, 2\] \(size, weight\) "
        rf"and x_cat int \[batch, 1\] of vocabulary indices \(color\): ({error})",
    ):
        save_artifact(model_class().eval(), str(tmp_path / "m"), inputs=spec(USER_ORDER))
    assert not (tmp_path / "m").exists()


def test_kwargs_keep_their_order_and_a_reordered_artifact_is_refused_at_load(tmp_path: Path) -> None:
    torch.manual_seed(0)
    activations = {"second": "relu", "first": "tanh"}  # not alphabetical on purpose
    model, frame = OrderedBlocks(**activations).eval(), rows()
    uri = tmp_path / "blocks"
    save_artifact(
        model,
        str(uri),
        inputs=spec(USER_ORDER),
        model_kwargs=activations,
        example_rows=frame,
        example_predictions=users_own_predictions(model, frame),
    )
    meta = json.loads((uri / METADATA_FILE).read_text())
    assert list(meta["model_kwargs"]) == ["second", "first"]
    assert [type(b[1]).__name__ for b in load_artifact(str(uri)).model.blocks] == ["ReLU", "Tanh"]
    meta["model_kwargs"] = dict(sorted(activations.items()))  # what sorted JSON keys used to do
    (uri / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(
        ArtifactError, match=r"does not reproduce the example predictions: \d+ of 12 rows differ"
    ):
        load_artifact(str(uri))


def test_weights_replaced_after_saving_are_refused_at_load(tmp_path: Path) -> None:
    import hashlib

    torch.manual_seed(0)
    model, frame = ColorNet().eval(), rows()
    uri = tmp_path / "art"
    save_artifact(
        model,
        str(uri),
        inputs=spec(USER_ORDER),
        example_rows=frame,
        example_predictions=users_own_predictions(model, frame),
    )
    torch.save(ColorNet().state_dict(), uri / "model.pt")  # other weights, same architecture
    meta = json.loads((uri / METADATA_FILE).read_text())
    meta["files"]["model.pt"] = hashlib.sha256((uri / "model.pt").read_bytes()).hexdigest()
    (uri / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="does not reproduce the example predictions"):
        load_artifact(str(uri))


def test_predictions_of_another_output_are_refused_with_a_hint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, frame = ColorNet().eval(), rows()
    logits = np.log(users_own_predictions(model, frame)) - np.log1p(-users_own_predictions(model, frame))
    with pytest.raises(
        ArtifactError,
        match=r"No single categorical encoding explains it: check that the predictions are the "
        r"explained score \(probability",
    ):
        save_artifact(
            model,
            str(tmp_path / "l"),
            inputs=spec(USER_ORDER),
            example_rows=frame,
            example_predictions=logits,
        )
    save_artifact(
        model,
        str(tmp_path / "l"),
        inputs=spec(USER_ORDER),
        output={"explain": "logit"},
        example_rows=frame,
        example_predictions=logits,
    )


def test_keras_model_is_checked_the_same_way(tmp_path: Path) -> None:
    keras = pytest.importorskip("keras")
    from ig_airflow.demo.keras_model import build_tabular_keras

    keras.utils.set_random_seed(0)
    model = build_tabular_keras(2, ["color"], [4], hidden=[8])
    frame = rows()
    codes = frame["color"].map({c: i + 1 for i, c in enumerate(USER_ORDER)}).to_numpy()[:, None]
    predictions = 1 / (
        1 + np.exp(-model.predict([frame[["size", "weight"]].to_numpy(), codes], verbose=0).reshape(-1))
    )
    keras_spec = spec(USER_ORDER)
    keras_spec["categorical"][0]["embedding_layer"] = "embedding_color"
    save_artifact(
        model,
        str(tmp_path / "k"),
        inputs=keras_spec,
        custom_objects_module="ig_airflow.demo.keras_model",
        example_rows=frame,
        example_predictions=predictions,
    )
    assert load_artifact(str(tmp_path / "k")).metadata.examples.rows == 12
    keras_spec["categorical"][0]["vocabulary"] = sorted(USER_ORDER)
    with pytest.raises(ArtifactError, match="Likely culprit: feature 'color'"):
        save_artifact(
            model,
            str(tmp_path / "k2"),
            inputs=keras_spec,
            custom_objects_module="ig_airflow.demo.keras_model",
            example_rows=frame,
            example_predictions=predictions,
        )


def test_baseline_follows_the_reference_data_when_none_is_configured(tmp_path: Path) -> None:
    from ig_airflow.config import parse_run_config
    from ig_airflow.run.local import run_explain

    torch.manual_seed(0)
    model, frame = ColorNet().eval(), rows(30)
    save_artifact(model, str(tmp_path / "a"), inputs=spec(USER_ORDER))  # no baseline in the artifact
    frame.to_parquet(tmp_path / "rows.parquet", index=False)
    raw = {
        "model": {"uri": str(tmp_path / "a")},
        "data": {
            "input_uri": str(tmp_path / "rows.parquet"),
            "reference_uri": str(tmp_path / "rows.parquet"),
        },
        "ray": {"enabled": False},
        "output": {"uri": str(tmp_path / "run")},
    }
    manifest = run_explain(parse_run_config(raw))
    assert manifest["baseline_source"] == "reference data (median, most frequent)"
    assert manifest["baseline"]["size"] == pytest.approx(frame["size"].median())
    assert manifest["baseline"]["color"] == frame["color"].value_counts().index[0]
    raw["data"].pop("reference_uri")
    raw["output"]["uri"] = str(tmp_path / "run2")
    manifest = run_explain(parse_run_config(raw))
    assert (
        manifest["baseline_source"] == "default (zero, out-of-vocabulary)"
        and manifest["baseline"]["size"] == 0
    )
    in_memory = explain_dataframe(frame, str(tmp_path / "a"), reference=frame, n_steps=8)
    expected = pd.read_parquet(tmp_path / "run" / "attributions")
    np.testing.assert_allclose(in_memory["baseline_prediction"], expected["baseline_prediction"])


class TwoOutputs(ColorNet):
    """A ``[batch, 2]`` output: two sigmoid heads (say, churn and upsell)."""

    def __init__(self):
        super().__init__()
        self.out = nn.Linear(8, 2)

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        features = torch.cat([x_num, self.color(x_cat[:, 0])], dim=1)
        return self.out(self.activation(self.hidden(features)))


def test_multi_column_output_needs_a_named_target(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, frame = TwoOutputs().eval(), rows()
    with pytest.raises(ArtifactError, match=r"returns 2 outputs per row; name the one\(s\) to explain"):
        save_artifact(model, str(tmp_path / "two"), inputs=spec(USER_ORDER))  # never column 0 by default
    assert not (tmp_path / "two").exists()
    save_artifact(model, str(tmp_path / "second"), inputs=spec(USER_ORDER), output={"index": 1})
    explained = explain_dataframe(frame, str(tmp_path / "second"), n_steps=16)
    codes = frame["color"].map({c: i + 1 for i, c in enumerate(USER_ORDER)}).to_numpy()
    with torch.no_grad():
        numeric = torch.tensor(frame[["size", "weight"]].to_numpy(), dtype=torch.float32)
        second = torch.sigmoid(model(numeric, torch.tensor(codes)[:, None])[:, 1]).numpy()
    np.testing.assert_allclose(explained["prediction"], second, atol=1e-6)
