"""Drift metrics against hand-computed values, the two drift scenarios on the demo data, the
history table, and the HTML report rendered in headless Chromium."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ig_airflow.aggregation import feature_summary, histogram_quantiles
from ig_airflow.config import DriftSection, parse_run_config
from ig_airflow.drift import (
    DriftAlert,
    append_history,
    binned_wasserstein,
    jensen_shannon,
    ndcg_at_k,
    psi,
    spearman,
    summarise_drift,
)
from ig_airflow.explain import run_explain
from ig_airflow.io import write_parquet
from ig_airflow.report import build_report


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


def explain_rows(demo, rows: pd.DataFrame, out: Path, artifact: str | None = None, **ig) -> str:
    import yaml

    rows.to_parquet(out.with_suffix(".parquet"), index=False)
    raw = yaml.safe_load(Path(demo["config"]).read_text())
    raw["data"]["input_uri"] = str(out.with_suffix(".parquet"))
    raw["output"]["uri"] = str(out)
    raw["ray"] = {"enabled": False}
    raw["ig"].update(ig)
    if artifact:
        raw["model"]["uri"] = artifact
    run_explain(parse_run_config(raw))
    return str(out / "attributions.parquet")


@pytest.fixture(scope="module")
def halves(demo, demo_frames, tmp_path_factory):
    rows = demo_frames[1].sample(3000, random_state=7)
    tmp = tmp_path_factory.mktemp("halves")
    return (
        explain_rows(demo, rows.iloc[:1500], tmp / "first"),
        explain_rows(demo, rows.iloc[1500:], tmp / "second"),
        rows.iloc[:1500],
        tmp,
    )


def test_two_halves_of_one_period_raise_no_alert(halves, tmp_path: Path) -> None:
    first, second, _, _ = halves
    result = summarise_drift(second, str(tmp_path / "drift"), DriftSection(reference_uri=first), "second")
    assert result["alerts"] == [], result["alerts"]
    assert result["ndcg_at_k"] >= 0.95 and result["spearman"] >= 0.9


def test_model_with_a_dominant_feature_raises_an_alert_naming_it(
    demo, demo_frames, halves, tmp_path: Path
) -> None:
    from ig_airflow.demo.prepare import train_demo_torch

    train = demo_frames[0].copy()
    train["label"] = (train["hours_per_week"] > 45).astype(np.int64)  # hours now drive the label
    train_demo_torch(train, tmp_path / "shifted", epochs=3)
    first, _, rows, _ = halves
    shifted = explain_rows(demo, rows, tmp_path / "shifted_run", artifact=str(tmp_path / "shifted"))
    settings = DriftSection(reference_uri=first, on_alert="fail")
    with pytest.raises(DriftAlert, match="hours_per_week"):
        summarise_drift(shifted, str(tmp_path / "drift"), settings, "shifted")
    result = summarise_drift(shifted, str(tmp_path / "drift"), DriftSection(reference_uri=first), "shifted")
    named = {f for alert in result["alerts"] for f in alert["features"]}
    assert "hours_per_week" in named
    assert "hours_per_week" in result["entered_top_k"]
    assert result["ndcg_at_k"] < 0.90


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def test_report_opens_in_headless_chromium_with_every_image_loaded(halves, tmp_path: Path) -> None:
    first, second, _, tmp = halves
    history = str(tmp_path / "history.parquet")
    for key, uri in (("2024-01-01", first), ("2024-01-02", second)):
        append_history(history, key, feature_summary(uri), {"attributions_uri": uri})
    run = Path(second).parent
    summarise_drift(second, str(run / "drift"), DriftSection(reference_uri=first), "second")
    page = build_report(str(run), ["row_id"], history, waterfall_rows=2)
    names = sorted(p.name for p in Path(page).parent.glob("*.png"))
    assert names == [
        "drift.png",
        "importance.png",
        "importance_over_time.png",
        "waterfall_0.png",
        "waterfall_1.png",
    ]
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "headless Chromium is needed (scripts/setup.sh installs Debian's chromium)"
    dom = subprocess.run(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            f"file://{page}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert 'data-images="5"' in dom and 'data-images-loaded="5"' in dom


def test_report_shows_each_attributed_hidden_layer(demo, demo_frames, tmp_path: Path) -> None:
    from ig_airflow.aggregation import summarise_run

    uri = explain_rows(demo, demo_frames[1].head(400), tmp_path / "run", layer_attributions=["mlp.1"])
    summarise_run(uri, str(tmp_path / "run" / "summary"))
    page = Path(build_report(str(tmp_path / "run"), ["row_id"]))
    assert (page.parent / "layer_0.png").stat().st_size > 0
    units = pd.read_parquet(uri).filter(like="layer__mlp.1__")
    silent = int((units.abs().sum() == 0).sum())
    html = page.read_text()
    assert "Layer <code>mlp.1</code>" in html and f"64 units; {silent} with no attribution" in html
