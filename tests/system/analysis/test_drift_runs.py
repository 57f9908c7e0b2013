"""Drift on the demo data, explained for real: two random halves of one period raise no alert
(also at 500 rows a side, where the thresholds alone raise many); a model version trained on a
label made to depend on age puts age first with at most 5 alerts; an input shift on a feature the
model barely uses raises none, one on a feature it uses raises a drift-impact alert; cohort
summaries add up to the global one. And the HTML report rendered in headless Chromium."""

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
from ig_airflow.config import CohortSection, DriftSection, parse_run_config
from ig_airflow.io import read_json
from ig_airflow.run.local import run_explain

COHORTS = [CohortSection(column="sex"), CohortSection(column="age", bins=[35, 50])]


def run_config(demo, out: Path, artifact: str | None = None, **ig) -> dict:
    """The demo's run config for the rows in ``out``.parquet, written to the run folder ``out``."""
    import yaml

    raw = yaml.safe_load(Path(demo["config"]).read_text())
    raw["data"]["input_uri"] = str(out.with_suffix(".parquet"))
    raw["output"]["uri"] = str(out)
    raw["ray"] = {"enabled": False}
    raw["validation"] = {"enabled": False}
    raw["ig"].update(ig)
    if artifact:
        raw["model"]["uri"] = artifact
    return raw


def explain_rows(demo, rows: pd.DataFrame, out: Path, artifact: str | None = None, **ig) -> str:
    rows.to_parquet(out.with_suffix(".parquet"), index=False)
    run_explain(parse_run_config(run_config(demo, out, artifact, **ig)))
    return str(out / "attributions")


def threshold_alerts(result: dict, settings: DriftSection) -> int:
    """How many alerts the thresholds alone would raise (the drift stage before statistics)."""
    return sum(
        (f["js_distance"] > settings.js_max)
        + (f["psi"] > settings.psi_max)
        + (abs(f["share_change"]) > settings.share_change_max)
        for f in result["features"]
    )


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
    assert result["statistics"]["resamples"] == 200 and result["statistics"]["rows"]["current"] == 1500
    # the same model on the same period: the inputs did not drift, nor did the importance
    assert all(f["drift_impact"] < 0.02 and abs(f["importance_moved"]) < 0.02 for f in result["features"])
    on_disk = read_json(str(tmp_path / "drift" / "drift.json"))
    assert on_disk["alerts"] == [] and on_disk["inputs"]["current"].endswith("second.parquet")


def test_halves_of_1000_rows_raise_no_alert_where_thresholds_alone_raise_many(
    demo, demo_frames, tmp_path: Path
) -> None:
    rows = demo_frames[1].sample(1000, random_state=11)
    first = explain_rows(demo, rows.iloc[:500], tmp_path / "first")
    second = explain_rows(demo, rows.iloc[500:], tmp_path / "second")
    settings = DriftSection(reference_uri=first)
    result = summarise_drift(second, str(tmp_path / "drift"), settings, "second")
    assert result["alerts"] == [], result["alerts"]
    # Jensen-Shannon on 20 bins of 500 rows sits near its threshold with nothing changed
    assert threshold_alerts(result, settings) >= 5
    assert sum(f["js_distance_null"] > 0.1 for f in result["features"]) >= 7
    # 95% intervals: about one feature in 20 misses no change by chance; Holm keeps it from alerting
    assert sum(not f["share_change_ci_low"] < 0 < f["share_change_ci_high"] for f in result["features"]) <= 2


def test_model_version_that_leaks_age_puts_it_first_with_at_most_5_alerts(
    demo, demo_frames, halves, tmp_path: Path
) -> None:
    from ig_airflow.demo.prepare import train_demo_torch

    train = demo_frames[0].copy()
    train["label"] = ((train["age"] > 50) | (train["label"] == 1)).astype(np.int64)  # age leaks into it
    train_demo_torch(train, tmp_path / "leaky", epochs=3)
    first, _, rows, _ = halves
    leaky = explain_rows(demo, rows, tmp_path / "leaky_run", artifact=str(tmp_path / "leaky"))
    settings = DriftSection(reference_uri=first)
    result = summarise_drift(leaky, str(tmp_path / "drift"), settings, "leaky", cohorts=COHORTS)
    alerts = result["alerts"]
    assert 1 <= len(alerts) <= 5, alerts
    assert alerts[0]["features"] == ["age"] and result["alerted_features"][0]["feature"] == "age"
    assert result["features"][0]["feature"] == "age"  # first by current importance
    assert threshold_alerts(result, settings) >= 10  # what the thresholds alone raised
    share = next(a for a in alerts if a["metric"] == "share_change")
    assert share["ci95"][0] > 0.1 and share["p_adjusted"] < 1e-6
    # per cohort: the segments partition the rows; the leak is largest where age > 50
    for cohort in ("sex", "age"):
        segments = [c for c in result["cohorts"] if c["cohort"] == cohort]
        assert sum(c["reference_rows"] for c in segments) == sum(c["current_rows"] for c in segments) == 1500
    by_segment = {(c["cohort"], c["segment"]): c for c in result["cohorts"]}
    older = {f["feature"]: f for f in by_segment[("age", ">= 50")]["features"]}
    younger = {f["feature"]: f for f in by_segment[("age", "< 35")]["features"]}
    assert older["age"]["share_change"] > younger["age"]["share_change"] + 0.2
    assert older["age"]["share_change_ci95"][0] > 0.3
    assert result["cohort_alerts"] and not any("cohort" in a for a in alerts)  # recorded only
    settings = DriftSection(reference_uri=first, cohort_alerts=True)
    raised = summarise_drift(leaky, str(tmp_path / "drift"), settings, "leaky", cohorts=COHORTS)["alerts"]
    assert len(raised) == len(alerts) + len(result["cohort_alerts"])


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
    assert result["alerts"][0]["metric"] == "ndcg_at_k"  # the global alert heads the list
    assert result["alerted_features"][0]["feature"] == "hours_per_week"


def test_input_shift_on_a_feature_the_model_barely_uses_raises_no_alert(halves, demo, tmp_path: Path) -> None:
    first, _, rows, _ = halves
    later = pd.read_parquet(Path(halves[1]).parent.with_suffix(".parquet"))
    rng = np.random.default_rng(3)
    shifted = later.assign(race=np.where(rng.random(len(later)) < 0.5, "Asian-Pac-Islander", later["race"]))
    current = explain_rows(demo, shifted, tmp_path / "race_shift")
    result = summarise_drift(current, str(tmp_path / "drift"), DriftSection(reference_uri=first), "race")
    assert result["alerts"] == [], result["alerts"]
    race = next(f for f in result["features"] if f["feature"] == "race")
    assert race["input_js_distance"] > 0.3 > 5 * race["input_js_distance_null"]  # the input moved
    assert race["js_distance"] > 0.1 and race["js_distance_p_value"] < 1e-3  # so did its attributions
    assert race["current_share"] < 0.03 and race["drift_impact"] < 0.02  # a sliver of the importance
    # the same shift size on a feature the model uses: a drift-impact alert naming it
    older = explain_rows(demo, later.assign(age=later["age"] + 12), tmp_path / "age_shift")
    result = summarise_drift(older, str(tmp_path / "drift"), DriftSection(reference_uri=first), "age")
    assert {f for a in result["alerts"] for f in a["features"]} == {"age"}
    assert any(a["metric"] == "drift_impact" for a in result["alerts"])


def test_cohort_summaries_add_up_to_the_global_summary(demo, halves) -> None:
    from ig_airflow.pipeline import run_aggregation

    first = Path(halves[0]).parent
    raw = run_config(demo, first)
    raw["cohorts"] = [c.model_dump() for c in COHORTS] + [{"column": "occupation", "max_values": 4}]
    result = run_aggregation(parse_run_config(raw))
    assert set(result["cohorts"]) == {"sex", "age", "occupation"}
    assert list(result["cohorts"]["age"]) == ["< 35", "[35, 50)", ">= 50"]
    assert list(result["cohorts"]["occupation"])[-1] == "(other)"
    cohorts = pd.read_parquet(result["outputs"]["cohort_summary"])
    overall = pd.read_parquet(result["outputs"]["feature_summary"]).set_index("feature")
    assert {"mean_abs_ci_low", "share_ci_low", "rank_ci_high"} <= set(overall.columns)
    for cohort, group in cohorts.groupby("cohort"):
        assert (
            sum(result["cohorts"][cohort].values()) == group.drop_duplicates("segment")["rows"].sum() == 1500
        )
        for column in ("mean_abs_attribution", "mean_attribution"):
            weighted = (group["rows"] * group[column]).groupby(group["feature"]).sum() / 1500
            np.testing.assert_allclose(weighted, overall.loc[weighted.index, column], rtol=1e-9, atol=1e-12)

    # the report: one section per cohort, each segment with its rows and, against the other half, NDCG@k
    summarise_drift(
        halves[0], str(first / "drift"), DriftSection(reference_uri=halves[1]), "1", cohorts=COHORTS
    )
    page = Path(build_report(str(first), ["row_id"])).read_text()
    for i, (cohort, segments) in enumerate((("sex", ["Male", "Female"]), ("age", ["&lt; 35", "&gt;= 50"]))):
        section = page.split(f'<section id="cohort-{i}">')[1].split("</section>")[0]
        assert f"<code>{cohort}</code>" in section and section.count("<img") == 1
        for segment in segments:
            row = section.split(f"<td>{segment}</td>")[1].split("</tr>")[0]
            rows = int(row.split("<td>")[1].split("</td>")[0])
            assert rows == result["cohorts"][cohort][segment.replace("&lt;", "<").replace("&gt;", ">")]
            assert "[0." in row or "[1." in row  # NDCG@k with its interval


def test_report_opens_in_headless_chromium_with_every_image_loaded(halves, tmp_path: Path) -> None:
    first, second, _, tmp = halves
    history = str(tmp_path / "history.parquet")
    for key, uri in (("2024-01-01", first), ("2024-01-02", second)):
        append_history(history, key, feature_summary(uri), {"attributions_uri": uri})
    run = Path(second).parent
    summarise_drift(second, str(run / "drift"), DriftSection(reference_uri=first), "second")
    page = build_report(str(run), ["row_id"], history, waterfall_rows=2)
    names = sorted(p.name for p in Path(page).parent.glob("*.png"))
    # the report may add figures (it is being rewritten); these are the drift stage's own
    assert {
        "drift.png",
        "importance.png",
        "importance_over_time.png",
        "waterfall_0.png",
        "waterfall_1.png",
    } <= set(names)
    dom = dump_dom(Path(page), tmp_path / "profile")
    assert f'data-images="{len(names)}"' in dom and f'data-images-loaded="{len(names)}"' in dom


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
