"""The model/data split on known attributions: with every row in the sample it is the Shapley
formula on the four importances exactly, its parts add up to the change, the same rows put it all
in the model part; a reason, not a split, when it is turned off, not given or not possible."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ig_airflow.analysis.decomposition import (
    CrossTerms,
    NoDecomposition,
    PairedSample,
    decompose,
    decompose_change,
)
from ig_airflow.config import DecompositionSection, DriftSection

FEATURES = ["a", "b", "c"]


def attributions(rows: np.ndarray, weights: list[float]) -> np.ndarray:
    """A linear model's attributions against a zero baseline: each input times its weight."""
    return rows * np.asarray(weights)


def setting(d1: np.ndarray, d2: np.ndarray) -> tuple[pd.DataFrame, CrossTerms, dict[str, pd.Series]]:
    """Model 1 on d1 (the reference) and model 2 on d2 (the current), every row sampled."""
    m1, m2 = [1.0, 2.0, 0.5], [3.0, 2.0, -0.5]
    runs = {
        "11": attributions(d1, m1),
        "22": attributions(d2, m2),
        "12": attributions(d2, m1),
        "21": attributions(d1, m2),
    }
    g = {k: pd.Series(np.abs(v).mean(axis=0), FEATURES) for k, v in runs.items()}
    signed = {k: v.mean(axis=0) for k, v in runs.items()}
    frame = pd.DataFrame(
        {
            "feature": FEATURES,
            "reference_mean_abs": g["11"].to_numpy(),
            "current_mean_abs": g["22"].to_numpy(),
            "reference_mean": signed["11"],
            "current_mean": signed["22"],
        }
    )
    cross = CrossTerms(
        FEATURES,
        current=PairedSample(runs["22"], runs["12"], len(d2)),
        reference=PairedSample(runs["11"], runs["21"], len(d1)),
        models={"reference": "v1", "current": "v2"},
    )
    return frame, cross, g


def test_every_row_sampled_gives_the_shapley_split_of_the_four_importances() -> None:
    rng = np.random.default_rng(0)
    frame, cross, g = setting(rng.normal(size=(300, 3)), rng.normal(1.0, 2.0, size=(200, 3)))
    entry, table = decompose(frame, cross, resamples=200, seed=0)
    parts = table.set_index("feature").loc[FEATURES]
    model = 0.5 * ((g["22"] - g["12"]) + (g["21"] - g["11"]))
    data = 0.5 * ((g["22"] - g["21"]) + (g["12"] - g["11"]))
    np.testing.assert_allclose(parts["model"], model, rtol=1e-12)
    np.testing.assert_allclose(parts["data"], data, rtol=1e-12)
    np.testing.assert_allclose(parts["model"] + parts["data"], g["22"] - g["11"], rtol=1e-12)
    np.testing.assert_allclose(parts["reference_model_on_current_rows"], g["12"], rtol=1e-12)
    np.testing.assert_allclose(parts["current_model_on_reference_rows"], g["21"], rtol=1e-12)
    share = model.abs().sum() / (model.abs().sum() + data.abs().sum())
    assert entry["model_share"] == pytest.approx(share) and entry["data_share"] == pytest.approx(1 - share)
    assert entry["summary"].startswith(f"{share:.0%} of the change") and "(v1 -> v2)" in entry["summary"]
    assert (parts["model_ci_low"] <= parts["model"]).all() and (
        parts["model"] <= parts["model_ci_high"]
    ).all()
    assert list(table["feature"])[0] == (model.abs() + data.abs()).idxmax()  # largest change first


def test_the_same_rows_put_the_whole_change_in_the_model_part() -> None:
    rows = np.random.default_rng(1).normal(size=(250, 3))
    frame, cross, g = setting(rows, rows)
    entry, table = decompose(frame, cross, resamples=50, seed=0)
    np.testing.assert_allclose(table["data"], 0.0, atol=1e-12)
    np.testing.assert_allclose(table["signed_data"], 0.0, atol=1e-12)
    assert entry["model_share"] == pytest.approx(1.0)


def test_no_split_is_a_recorded_reason(tmp_path: Path) -> None:
    frame, _, _ = setting(np.ones((4, 3)), np.ones((4, 3)))

    def impossible(reference: str, current: str, features: list[str]) -> CrossTerms:
        raise NoDecomposition(f"{reference} has no run manifest")

    off = DriftSection(decomposition=DecompositionSection(enabled=False))
    on = DriftSection()
    out = str(tmp_path)
    assert decompose_change(frame, "ref", "cur", impossible, off, out)["reason"] == (
        "drift.decomposition.enabled is false"
    )
    assert "no extra IG pass" in decompose_change(frame, "ref", "cur", None, on, out)["reason"]
    assert decompose_change(frame, "ref", "cur", impossible, on, out) == {
        "available": False,
        "reason": "ref has no run manifest",
    }
    assert not list(tmp_path.iterdir())  # no table without a split
