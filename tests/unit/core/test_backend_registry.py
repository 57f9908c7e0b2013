"""A third framework is one backend class and a registration: a tiny NumPy backend (linear model
with embeddings, gradients by central differences, exact for a linear model) saves, loads and
explains through the public API, where IG has a closed form."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ig_airflow import explain_dataframe, register_backend, save_artifact
from ig_airflow.artifacts import load_artifact, read_metadata
from ig_airflow.config import parse_run_config
from ig_airflow.core.attribution import InputAttributor
from ig_airflow.core.backend import SavedModelFile, backend_names, unregister_backend
from ig_airflow.core.outputs import calibrated_scores
from ig_airflow.exceptions import ArtifactError
from ig_airflow.run.local import run_explain

COLORS = ["red", "green", "blue"]


class LinearScorer:
    """``logit = w . x_num + sum_j v_j . E_j[x_cat_j] + b``."""

    def __init__(self, weights: np.ndarray, table: np.ndarray, readout: np.ndarray, bias: float):
        self.weights, self.table, self.readout, self.bias = weights, table, readout, bias

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "weights": self.weights,
            "table": self.table,
            "readout": self.readout,
            "bias": np.array(self.bias),
        }


class NumpyOps:
    h = 1e-3

    def constant(self, array: np.ndarray) -> np.ndarray:
        return np.asarray(array, dtype=np.float64)

    numpy = constant

    def interpolate(self, base: np.ndarray, values: np.ndarray, alphas: np.ndarray) -> np.ndarray:
        path = base[:, None] + alphas.reshape((1, -1) + (1,) * (values.ndim - 1)) * (values - base)[:, None]
        return path.reshape((-1, *values.shape[1:]))

    def integrate(self, grad: np.ndarray, weights: np.ndarray, rows: int) -> np.ndarray:
        flat = grad.reshape(rows, len(weights), -1)
        return np.einsum("rnd,n->rd", flat, weights).reshape((rows, *grad.shape[1:]))

    def gradients(self, fn: Callable[[list[np.ndarray]], np.ndarray], inputs: list[np.ndarray]) -> list[Any]:
        """Per-row central differences, one column of one input at a time (rows are independent);
        one list of gradients per target column of ``fn``."""
        n_targets = fn(inputs).shape[1]
        per_target: list[list[np.ndarray]] = [[] for _ in range(n_targets)]
        for i, tensor in enumerate(inputs):
            grads = [np.zeros_like(tensor) for _ in range(n_targets)]
            for k in range(tensor[0].size):
                step = np.zeros(tensor[0].size)
                step[k] = self.h
                shifted = [list(inputs), list(inputs)]
                shifted[0][i] = tensor + step.reshape(tensor.shape[1:])
                shifted[1][i] = tensor - step.reshape(tensor.shape[1:])
                columns = (fn(shifted[0]) - fn(shifted[1])) / (2 * self.h)
                for t, grad in enumerate(grads):
                    grad.reshape(len(tensor), -1)[:, k] = columns[:, t]
            for t, grad in enumerate(grads):
                per_target[t].append(grad)
        return per_target

    take = staticmethod(lambda tensor, columns: np.take_along_axis(tensor, columns, axis=1))

    concat = staticmethod(lambda parts: np.concatenate(list(parts)))
    repeat = staticmethod(lambda tensor, times: np.repeat(tensor, times, axis=0))
    reshape = staticmethod(np.reshape)
    sigmoid = staticmethod(lambda x: 1 / (1 + np.exp(-x)))
    softmax = staticmethod(lambda x: np.exp(x) / np.exp(x).sum(-1, keepdims=True))


class NumpyAdapter:
    """The one embedding layer is called ``embedding``."""

    def __init__(self, model: LinearScorer, metadata: Any):
        self.model, self.metadata, self.ops = model, metadata, NumpyOps()
        self.embedding_layers = [self.layer(f.embedding_layer) for f in metadata.inputs.categorical]
        self.substituted: dict[str, np.ndarray] = {}
        self.captures: list[tuple[Sequence[str], list[Any]]] = []

    def layer(self, name: str) -> str:
        if name != "embedding":
            raise ArtifactError(f"unknown layer name {name!r}; layers: ['embedding']")
        return name

    def tensors(self, numeric: np.ndarray, categorical: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(numeric, np.float64), np.asarray(categorical, np.int64)

    def __call__(self, x_num: np.ndarray, x_cat: np.ndarray) -> np.ndarray:
        embedded = self.substituted.get("embedding", self.model.table[x_cat[:, 0]])
        for layers, captured in self.captures:
            if "embedding" in layers:
                captured[list(layers).index("embedding")] = embedded
        logits = x_num @ self.model.weights + embedded @ self.model.readout + self.model.bias
        return calibrated_scores(logits, self.metadata.output, self.metadata.calibration, self.ops)

    @contextlib.contextmanager
    def capture(self, layers: Sequence[str]) -> Iterator[list[Any]]:
        captured: list[Any] = [None] * len(layers)
        self.captures.append((layers, captured))
        try:
            yield captured
        finally:
            self.captures.pop()

    @contextlib.contextmanager
    def substitute(self, layers: Sequence[str], values: Sequence[np.ndarray]) -> Iterator[None]:
        self.substituted = dict(zip(layers, values, strict=True))
        try:
            yield
        finally:
            self.substituted = {}

    inference = staticmethod(contextlib.nullcontext)

    def bytes_per_interpolated_row(self, x_num: Any, x_cat: Any) -> int:
        return 64


class NumpyLinearBackend:
    name = "numpy-linear"
    loaders = ("npz",)

    def owns(self, model: Any) -> bool:
        return isinstance(model, LinearScorer)

    def save(
        self, model: LinearScorer, directory: Path, spec: Any, loader: Any, model_class: Any
    ) -> SavedModelFile:
        np.savez(directory / "model.npz", **model.arrays())
        return SavedModelFile("npz", "model.npz")

    def load(self, path: Path, metadata: Any, allow_pickle: bool, uri: str) -> LinearScorer:
        with np.load(path, allow_pickle=False) as arrays:
            return LinearScorer(arrays["weights"], arrays["table"], arrays["readout"], float(arrays["bias"]))

    def check(self, model: LinearScorer, metadata: Any) -> None:
        NumpyAdapter(model, metadata)

    def predict(
        self, model: LinearScorer, metadata: Any, numeric: np.ndarray, categorical: np.ndarray
    ) -> np.ndarray:
        return NumpyAdapter(model, metadata)(numeric, categorical)

    def attributor(self, model: LinearScorer, metadata: Any, baseline: Any, settings: Any) -> InputAttributor:
        return InputAttributor(NumpyAdapter(model, metadata), baseline, settings)

    def limit_threads(self, threads: int) -> None:
        pass

    @contextlib.contextmanager
    def randomised(self, model: LinearScorer, seed: int) -> Iterator[None]:
        rng, saved = np.random.default_rng(seed), (model.weights, model.table, model.readout)
        model.weights, model.table, model.readout = (rng.standard_normal(a.shape) for a in saved)
        try:
            yield
        finally:
            model.weights, model.table, model.readout = saved


@pytest.fixture
def numpy_backend() -> Iterator[None]:
    register_backend(NumpyLinearBackend())
    yield
    unregister_backend("numpy-linear")


@pytest.fixture
def model() -> LinearScorer:
    rng = np.random.default_rng(0)
    return LinearScorer(rng.normal(size=2), rng.normal(size=(len(COLORS) + 1, 3)), rng.normal(size=3), 0.5)


SPEC = {
    "numeric": [{"name": "x0"}, {"name": "x1"}],
    "categorical": [{"name": "color", "vocabulary": COLORS, "embedding_layer": "embedding"}],
}


def rows(n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame(
        {
            "id": np.arange(n),
            "x0": rng.normal(size=n),
            "x1": rng.normal(size=n),
            "color": rng.choice(COLORS, n),
        }
    )


def test_unknown_framework_is_refused_naming_the_known_ones(model, numpy_backend, tmp_path) -> None:
    save_artifact(model, str(tmp_path / "a"), inputs=SPEC, output={"explain": "logit"})
    assert "numpy-linear" in backend_names()
    unregister_backend("numpy-linear")
    with pytest.raises(ArtifactError, match=r"no backend for framework 'numpy-linear'; known frameworks: \["):
        read_metadata(str(tmp_path / "a"))


def test_registered_backend_explains_a_linear_model_exactly(model, numpy_backend, tmp_path) -> None:
    uri = str(tmp_path / "linear")
    metadata = save_artifact(model, uri, inputs=SPEC, output={"explain": "logit"})
    assert (metadata.framework, metadata.loader, sorted(metadata.files)) == (
        "numpy-linear",
        "npz",
        ["model.npz"],
    )
    frame = rows()
    result = explain_dataframe(frame, uri, id_columns=["id"], n_steps=4, layer_attributions=["embedding"])

    # closed form: IG_i = w_i (x_i - x'_i); the embedding's IG = v . (E[c] - E[oov]) (zero / OOV baseline)
    codes = frame["color"].map({c: i + 1 for i, c in enumerate(COLORS)}).to_numpy()
    diff = model.table[codes] - model.table[0]
    np.testing.assert_allclose(result["attr__x0"], model.weights[0] * frame["x0"], atol=1e-6)
    np.testing.assert_allclose(result["attr__x1"], model.weights[1] * frame["x1"], atol=1e-6)
    np.testing.assert_allclose(result["attr__color"], diff @ model.readout, atol=1e-6)
    for unit in range(3):
        np.testing.assert_allclose(
            result[f"layer__embedding__{unit}"], diff[:, unit] * model.readout[unit], atol=1e-6
        )
    assert result["completeness_error"].max() < 1e-6 and (result["n_steps"] == 4).all()
    assert result["converged"].all() and list(result["id"]) == list(frame["id"])


def test_registered_backend_runs_through_the_in_process_runner(model, numpy_backend, tmp_path) -> None:
    uri = str(tmp_path / "linear")
    save_artifact(model, uri, inputs=SPEC, calibration={"method": "platt", "a": 0.8, "b": -0.1})
    rows().to_parquet(tmp_path / "rows.parquet", index=False)
    config = parse_run_config(
        {
            "model": {"uri": uri},
            "data": {"input_uri": str(tmp_path / "rows.parquet"), "id_columns": ["id"]},
            "ray": {"enabled": False},
            "output": {"uri": str(tmp_path / "run")},
        }
    )
    manifest = run_explain(config)
    assert manifest["artifact"]["framework"] == "numpy-linear" and manifest["rows"]["explained"] == 40
    assert manifest["completeness"]["unconverged_rows"] == 0  # a sigmoid: adaptive steps met the 1% tolerance
    table = pd.read_parquet(tmp_path / "run" / "attributions")
    assert table["completeness_error"].max() <= 0.01
    assert load_artifact(uri).backend.name == "numpy-linear"
