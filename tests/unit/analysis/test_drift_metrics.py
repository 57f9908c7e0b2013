"""Drift metrics and summaries against hand-computed values, and the history table."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ig_airflow.analysis.aggregation import feature_summary, histogram_quantiles
from ig_airflow.analysis.drift import (
    append_history,
    binned_wasserstein,
    jensen_shannon,
    ndcg_at_k,
    psi,
    spearman,
)
from ig_airflow.io import write_parquet


def test_ndcg_hand_computed() -> None:
    reference = {"a": 3.0, "b": 2.0, "c": 1.0}
    assert ndcg_at_k(reference, {"a": 9, "b": 5, "c": 1}, 2) == pytest.approx(1.0)
    # current ranks b above a: DCG = 2/log2(2) + 3/log2(3); IDCG = 3/log2(2) + 2/log2(3)
    expected = (2 + 3 / math.log2(3)) / (3 + 2 / math.log2(3))
    assert ndcg_at_k(reference, {"b": 9, "a": 5, "c": 1}, 2) == pytest.approx(expected)
    assert expected == pytest.approx(0.913402, abs=1e-6)
    # c (relevance 1) enters the top 2 instead of b: DCG = 3 + 1/log2(3)
    assert ndcg_at_k(reference, {"a": 9, "c": 5, "b": 1}, 2) == pytest.approx(
        (3 + 1 / math.log2(3)) / (3 + 2 / math.log2(3))
    )


def test_spearman_hand_computed() -> None:
    ref = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}
    assert spearman(ref, {"a": 10.0, "b": 20.0, "c": 30.0, "d": 40.0}) == pytest.approx(1.0)
    assert spearman(ref, {"a": 4.0, "b": 3.0, "c": 2.0, "d": 1.0}) == pytest.approx(-1.0)
    # one swap of neighbours: 1 - 6*sum(d^2)/(n(n^2-1)) = 1 - 6*2/60 = 0.8
    assert spearman(ref, {"a": 2.0, "b": 1.0, "c": 3.0, "d": 4.0}) == pytest.approx(0.8)


def test_distribution_metrics_hand_computed() -> None:
    assert jensen_shannon(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)
    assert jensen_shannon(np.array([0.3, 0.7]), np.array([0.3, 0.7])) == pytest.approx(0.0)
    # JS divergence of (1,0) and (0.5,0.5): 0.5*KL(p||m) + 0.5*KL(q||m), m = (0.75, 0.25)
    div = 0.5 * math.log2(1 / 0.75) + 0.5 * (0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25))
    assert jensen_shannon(np.array([1.0, 0.0]), np.array([0.5, 0.5])) == pytest.approx(math.sqrt(div))
    expected_psi = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.75 - 0.5) * math.log(0.75 / 0.5)
    assert psi(np.array([0.5, 0.5]), np.array([0.25, 0.75])) == pytest.approx(expected_psi)
    assert expected_psi == pytest.approx(0.274653, abs=1e-6)
    edges = np.array([0.0, 1.0, 2.0, 3.0])
    # all mass moves from bin 0 to bin 2: two bin widths
    assert binned_wasserstein(np.array([1.0, 0, 0]), np.array([0, 0, 1.0]), edges) == pytest.approx(2.0)
    assert binned_wasserstein(np.array([0.5, 0.5, 0]), np.array([0, 0.5, 0.5]), edges) == pytest.approx(1.0)


def test_histogram_quantiles_and_streamed_summary(tmp_path: Path) -> None:
    edges = np.array([0.0, 1.0, 2.0])
    assert histogram_quantiles(np.array([1, 3]), edges, [0.25, 0.5, 1.0]) == pytest.approx(
        [1.0, 1 + 1 / 3, 2.0]
    )
    values = np.random.default_rng(0).normal(size=200_000)
    table = pa.table({"attr__x": values, "attr__y": 2 * values, "prediction": values})
    write_parquet(str(tmp_path / "a.parquet"), table)  # 65,536-row groups: 4 column chunks
    summary = feature_summary(str(tmp_path / "a.parquet")).set_index("feature")
    assert summary.at["x", "mean_abs_attribution"] == pytest.approx(np.abs(values).mean(), rel=1e-12)
    assert summary.at["y", "share"] == pytest.approx(2 / 3)
    width = (values.max() - values.min()) / 4096
    assert abs(summary.at["x", "q50"] - np.median(values)) <= width
    assert abs(summary.at["x", "q95"] - np.quantile(values, 0.95)) <= width


def test_history_table_is_appended_idempotently(tmp_path: Path) -> None:
    summary = pd.DataFrame(
        {
            "feature": ["a", "b"],
            "mean_abs_attribution": [0.2, 0.1],
            "mean_attribution": [0.1, 0.0],
            "share": [2 / 3, 1 / 3],
            "rank": [1, 2],
        }
    )
    uri = str(tmp_path / "history.parquet")
    assert append_history(uri, "2024-01-01", summary, {}) == 2
    assert append_history(uri, "2024-01-02", summary, {}) == 4
    before = Path(uri).read_bytes()
    assert append_history(uri, "2024-01-01", summary, {}) == 4
    assert Path(uri).read_bytes() == before


def test_feature_summary_intervals_cover_the_mean_at_the_standard_error(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rows = 200_000
    table = pa.table(
        {
            "attr__big": rng.normal(scale=1.0, size=rows),
            "attr__mid": rng.normal(scale=0.5, size=rows),
            "attr__small": rng.standard_t(3, size=rows) * 0.1,
            "prediction": rng.random(rows),
        }
    )
    write_parquet(str(tmp_path / "a.parquet"), table)  # 4 column chunks, 2,041 blocks of 98 rows
    summary = feature_summary(str(tmp_path / "a.parquet"), resamples=400, seed=3).set_index("feature")
    assert summary.equals(
        feature_summary(str(tmp_path / "a.parquet"), resamples=400, seed=3).set_index("feature")
    )
    for feature in ("big", "mid", "small"):
        values = np.abs(table.column(f"attr__{feature}").to_numpy())
        row = summary.loc[feature]
        assert row["mean_abs_ci_low"] < values.mean() < row["mean_abs_ci_high"]
        width = 2 * 1.96 * values.std() / np.sqrt(rows)
        assert row["mean_abs_ci_high"] - row["mean_abs_ci_low"] == pytest.approx(width, rel=0.15)
        assert row["share_ci_low"] < row["share"] < row["share_ci_high"]
        assert row["rank_ci_low"] == row["rank_ci_high"] == row["rank"]  # far apart: never swap
    assert "mean_abs_ci_low" not in feature_summary(str(tmp_path / "a.parquet")).columns  # opt-in
