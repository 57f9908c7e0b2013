"""Categorical encodings as models are trained with them (index maps, pandas codes, the OOV row
first, last or absent), scaled numeric inputs and dense one-hot layouts: what the model gets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from ig_airflow import CategoricalFeature, InputSpec
from ig_airflow.config import BaselineSection, TopK
from ig_airflow.core.baselines import resolve_baseline
from ig_airflow.core.calling import fold_dense, model_arrays
from ig_airflow.core.encoding import encode_rows
from ig_airflow.core.outputs import target_columns
from ig_airflow.exceptions import ArtifactError, ConfigError, InputDataError
from ig_airflow.spec import OutputSpec


def test_pandas_codes_have_no_oov_row_and_refuse_unseen_values() -> None:
    categories = pd.Categorical(["b", "a", "c", "a"], categories=["c", "a", "b"])
    feature = CategoricalFeature.from_pandas("x", categories, oov_index=None, embedding_layer="emb")
    spec = InputSpec(categorical=[feature])
    _, codes = encode_rows(pd.DataFrame({"x": ["b", "a", "c"]}), spec)
    assert codes[:, 0].tolist() == pd.Categorical(["b", "a", "c"], categories=["c", "a", "b"]).codes.tolist()
    with pytest.raises(InputDataError, match=r"column 'x': 1 row\(s\) have values outside the vocabulary"):
        encode_rows(pd.DataFrame({"x": ["a", "zz"]}), spec)
    with pytest.raises(ConfigError, match="'x' has no out-of-vocabulary index"):
        resolve_baseline(spec, BaselineSection())  # the default OOV baseline does not exist here
    assert resolve_baseline(spec, BaselineSection(values={"x": "a"})).categorical.tolist() == [1]


def test_oov_first_last_and_explicit_index_maps() -> None:
    last = CategoricalFeature(name="x", vocabulary=["a", "b"], oov_index="last", embedding_layer="e")
    assert last.index_map() == {"a": 0, "b": 1, "<OOV>": 2} and last.cardinality == 3
    first = CategoricalFeature.from_index_map("x", {"a": 3, "b": 1}, oov_index="first", embedding_layer="e")
    assert first.index_map() == {"b": 1, "a": 3, "<OOV>": 0} and first.cardinality == 4
    with pytest.raises(ValidationError, match="share an index"):
        CategoricalFeature.from_index_map("x", {"a": 0, "b": 1}, oov_index=1)


def test_scaled_numeric_inputs_reach_the_model_scaled_and_fold_back() -> None:
    spec = InputSpec(numeric=[{"name": "age", "center": 40, "scale": 10}, {"name": "h"}])
    x_num, _ = model_arrays(spec, np.array([[50.0, 3.0]]), np.zeros((1, 0), np.int64))
    assert x_num.tolist() == [[1.0, 3.0]]
    gradients = np.array([[2.0, 5.0]])  # per scaled unit -> per raw unit
    assert fold_dense(spec, gradients, per_unit=True).tolist() == [[0.2, 5.0]]
    with pytest.raises(ValidationError, match="scale must be finite and non-zero"):
        InputSpec(numeric=[{"name": "age", "scale": 0}])


def test_dense_layout_follows_get_dummies_columns_and_sums_blocks() -> None:
    frame = pd.DataFrame({"age": [30.0, 40.0], "color": ["red", "blue"]})
    columns = list(
        pd.get_dummies(frame, columns=["color"], prefix_sep="=").columns
    )  # age, color=blue, color=red
    spec = InputSpec(
        numeric=[{"name": "age"}],
        categorical=[{"name": "color", "vocabulary": ["red", "blue"], "oov_index": None}],
        calling="dense",
        dense_columns=columns,
    )
    dense, index_block = model_arrays(spec, *encode_rows(frame, spec))
    assert dense.tolist() == [[30.0, 0.0, 1.0], [40.0, 1.0, 0.0]] and index_block.shape == (2, 0)
    no_category, _ = model_arrays(spec, np.array([[0.0]]), np.array([[-1]]))
    assert no_category.tolist() == [[0.0, 0.0, 0.0]]  # the dense baseline of a feature with no OOV
    assert fold_dense(spec, np.array([[1.0, 2.0, 3.0]]), per_unit=False).tolist() == [[1.0, 5.0]]
    with pytest.raises(ValidationError, match=r"dense_columns\[1\] 'color=green'"):
        InputSpec(
            numeric=[{"name": "age"}],
            categorical=[{"name": "color", "vocabulary": ["red", "blue"]}],
            calling="dense",
            dense_columns=["age", "color=green"],
        )


def test_targets_that_do_not_exist_are_refused_naming_them() -> None:
    output = OutputSpec(classes=["low", "high"])
    scores = np.array([[0.2, 0.8]])
    assert target_columns(["high", 0], output, scores).tolist() == [[1, 0]]
    with pytest.raises(
        ArtifactError, match=r"target 'medium' is not a class name; output.classes: \['low', 'high'\]"
    ):
        target_columns("medium", output, scores)
    with pytest.raises(ArtifactError, match="output index 5 is out of range: the model returns 2"):
        target_columns(5, output, scores)
    with pytest.raises(ArtifactError, match="top_k 3 > the model's 2 outputs"):
        target_columns(TopK(top_k=3), output, scores)
    with pytest.raises(ArtifactError, match="returns 2 outputs per row; name the one"):
        target_columns(None, output, scores)
