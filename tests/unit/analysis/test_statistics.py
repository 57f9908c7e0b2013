"""The resampling statistics behind summaries and drift: per-block sums streamed across chunk
boundaries, the Poisson block bootstrap against the textbook standard error and a plain
bootstrap, p-value tails against known distributions, Holm's adjustment by hand, and the
vectorised metrics against their one-row versions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ig_airflow.analysis import statistics as st
from ig_airflow.analysis.drift import binned_wasserstein, jensen_shannon, ndcg_at_k, psi, spearman


@pytest.mark.parametrize("block", [1, 7, 64, 1000])
def test_block_sums_and_counts_streamed_in_uneven_chunks_equal_a_direct_sum(block: int) -> None:
    rng = np.random.default_rng(block)
    values = rng.normal(size=5003)
    codes = rng.integers(0, 4, size=5003)
    blocks = st.block_count(len(values), block)
    sums, counts, weighted = np.zeros(blocks), np.zeros((blocks, 4)), np.zeros((blocks, 4))
    cuts = np.sort(rng.choice(np.arange(1, len(values)), size=9, replace=False))
    for start, stop in zip([0, *cuts], [*cuts, len(values)], strict=True):
        st.add_block_sums(sums, values[start:stop], start, block)
        st.add_block_counts(counts, codes[start:stop], start, block)
        st.add_block_counts(weighted, codes[start:stop], start, block, values[start:stop])
    ids = np.arange(len(values)) // block
    np.testing.assert_allclose(sums, np.bincount(ids, weights=values), atol=1e-9)
    for code in range(4):
        mine = codes == code
        np.testing.assert_array_equal(counts[:, code], np.bincount(ids[mine], minlength=blocks))
        np.testing.assert_allclose(
            weighted[:, code], np.bincount(ids[mine], weights=values[mine], minlength=blocks), atol=1e-9
        )
    assert counts.sum() == len(values)


def test_block_rows_keeps_at_most_max_blocks() -> None:
    assert st.block_rows(1500) == 1 and st.block_count(1500, 1) == 1500
    assert st.block_rows(1_000_000) == 489 and st.block_count(1_000_000, 489) == 2045 <= st.MAX_BLOCKS
    assert st.block_rows(0) == 1


@pytest.mark.parametrize("rows, block", [(4000, 1), (200_000, st.block_rows(200_000))])
def test_poisson_block_bootstrap_of_a_mean_matches_the_standard_error(rows: int, block: int) -> None:
    rng = np.random.default_rng(0)
    values = np.abs(rng.standard_t(df=5, size=rows))  # skewed, like |attributions|
    blocks = st.block_count(rows, block)
    sums = np.zeros(blocks)
    st.add_block_sums(sums, values, 0, block)
    counts = np.bincount(np.arange(rows) // block).astype(np.float64)
    weights = st.poisson_weights(np.random.default_rng(1), 2000, blocks)
    means = st.resampled_means(weights, sums, counts)
    standard_error = values.std(ddof=1) / math.sqrt(rows)
    assert means.std() == pytest.approx(standard_error, rel=0.08)
    low, high = st.interval(means)
    assert low < values.mean() < high
    assert high - low == pytest.approx(2 * 1.96 * standard_error, rel=0.1)
    # the same as resampling the rows themselves (a plain bootstrap)
    plain = [values[rng.integers(0, rows, rows)].mean() for _ in range(400)]
    assert means.std() == pytest.approx(np.std(plain), rel=0.15)


def test_p_values_follow_the_null_distribution_beyond_the_resamples() -> None:
    rng = np.random.default_rng(3)
    null = rng.chisquare(19, size=200) * 0.01  # a divergence under no change (scaled chi-square)
    # the true upper tail at 19 degrees of freedom: P(X > 43.82) = 0.001, P(X > 30.14) = 0.05
    assert st.p_value(0.4382, null, "upper") == pytest.approx(0.001, rel=0.6)
    assert st.p_value(0.3014, null, "upper") == pytest.approx(0.05, rel=0.3)
    assert st.p_value(0.19, null, "upper") > 0.3
    signed = rng.normal(0.0, 0.02, size=200)
    assert st.p_value(0.0, signed, "two_sided") > 0.8
    assert st.p_value(0.02 * 3.2905, signed, "two_sided") == pytest.approx(0.001, rel=0.5)
    assert st.p_value(-0.0658, signed, "two_sided") < 0.003  # both tails
    high = rng.normal(0.99, 0.002, size=200)  # NDCG under no change; low is a change
    assert st.p_value(0.95, high, "lower") < 1e-6 and st.p_value(0.995, high, "lower") > 0.9
    assert st.p_value(0.0, np.zeros(200), "upper") == 1.0  # nothing varies, nothing changed
    assert st.p_value(0.1, np.zeros(200), "upper") == st.P_FLOOR  # far beyond


def test_holm_by_hand() -> None:
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max 0.06
    assert st.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert st.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0]) and st.holm([]) == []


def test_vectorised_metrics_equal_the_one_row_versions() -> None:
    rng = np.random.default_rng(5)
    p, q = st.normalised(rng.random((50, 20))), st.normalised(rng.random((50, 20)) ** 3)
    q[:, 3] = 0.0  # an empty bin
    edges = np.linspace(-1, 2, 21)
    js, index, moved = st.js_distance(p, q), st.psi(p, q), st.wasserstein(p, q, edges)
    for i in range(50):
        assert js[i] == pytest.approx(jensen_shannon(p[i], q[i]))
        assert index[i] == pytest.approx(psi(p[i], q[i]))
        assert moved[i] == pytest.approx(binned_wasserstein(p[i], q[i], edges))
    features = [f"f{i}" for i in range(12)]
    a, b = rng.random((30, 12)), rng.random((30, 12))
    ndcg, rho = st.ndcg_rows(a, b, 5), st.spearman_rows(a, b)
    for i in range(30):
        ref, cur = dict(zip(features, a[i], strict=True)), dict(zip(features, b[i], strict=True))
        assert ndcg[i] == pytest.approx(ndcg_at_k(ref, cur, 5))
        assert rho[i] == pytest.approx(spearman(ref, cur))
    ranks = st.ranks(np.array([[0.1, 0.5, 0.3], [3.0, 1.0, 2.0]]))
    np.testing.assert_array_equal(ranks, [[3, 1, 2], [1, 3, 2]])


def test_resampling_is_seeded_and_the_null_draws_each_run_by_its_share() -> None:
    one = st.Resampling.draw(200, 7, 300, 100, 0.75)
    two = st.Resampling.draw(200, 7, 300, 100, 0.75)
    np.testing.assert_array_equal(one.null_current, two.null_current)
    assert one.reference.shape == (200, 300) and one.null_reference.shape == (200, 400)
    # pooled blocks drawn at rates 0.75 and 0.25: the runs' sizes on average
    assert one.null_reference.sum(axis=1).mean() == pytest.approx(300, rel=0.03)
    assert one.null_current.sum(axis=1).mean() == pytest.approx(100, rel=0.05)
    assert not np.array_equal(one.reference[:, :100], one.current)  # independent streams
