"""The two drift scenarios on the demo data (explained for real), and the HTML report rendered
in headless Chromium."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import dump_dom

from ig_airflow.analysis.aggregation import feature_summary
from ig_airflow.analysis.drift import (
    DriftAlert,
    append_history,
    summarise_drift,
)
from ig_airflow.analysis.report import build_report
from ig_airflow.config import DriftSection, parse_run_config
from ig_airflow.run.local import run_explain


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
    return str(out / "attributions")


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
    dom = dump_dom(Path(page), tmp_path / "profile")
    assert 'data-images="5"' in dom and 'data-images-loaded="5"' in dom


def test_report_shows_each_attributed_hidden_layer(demo, demo_frames, tmp_path: Path) -> None:
    from ig_airflow.analysis.aggregation import summarise_run

    uri = explain_rows(demo, demo_frames[1].head(400), tmp_path / "run", layer_attributions=["mlp.1"])
    summarise_run(uri, str(tmp_path / "run" / "summary"))
    page = Path(build_report(str(tmp_path / "run"), ["row_id"]))
    assert (page.parent / "layer_0.png").stat().st_size > 0
    units = pd.read_parquet(uri).filter(like="layer__mlp.1__")
    silent = int((units.abs().sum() == 0).sum())
    html = page.read_text()
    assert "Layer <code>mlp.1</code>" in html and f"64 units; {silent} with no attribution" in html
