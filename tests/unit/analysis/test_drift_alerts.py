"""Alerts with statistics behind them, on synthetic attributions whose truth is known: two
samples of one distribution raise none; a feature that gains importance raises alerts naming
it first, with intervals that exclude no change; a shape change in a feature the model barely
uses is significant yet raises nothing; the rules of the config decide per metric and feature."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from ig_airflow.analysis.drift import Check, compare_runs, decide, rule_for
from ig_airflow.config import AlertRule, DriftSection
from ig_airflow.io import write_parquet

SCALES = {"a": 1.0, "b": 0.8, "c": 0.5, "d": 0.3, "tiny": 0.005}


def write_run(
    path: Path, seed: int, rows: int = 20_000, scale_b: float = 1.0, shift_tiny: float = 0.0
) -> str:
    rng = np.random.default_rng(seed)
    columns = {"row_id": np.arange(rows)}
    for feature, scale in SCALES.items():
        columns[f"attr__{feature}"] = rng.normal(scale=scale, size=rows)
    columns["attr__b"] *= scale_b
    columns["attr__tiny"] += shift_tiny
    columns["prediction"] = rng.random(rows)
    write_parquet(str(path), pa.table(columns))
    return str(path)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("synthetic")
    return {
        "reference": write_run(tmp / "reference.parquet", 0),
        "same": write_run(tmp / "same.parquet", 1),
        "changed": write_run(tmp / "changed.parquet", 2, scale_b=1.8, shift_tiny=0.01),
    }


def test_two_samples_of_one_distribution_raise_no_alert(runs) -> None:
    report = compare_runs(runs["reference"], runs["same"], DriftSection())
    assert report.alerts == []
    features = report.features.set_index("feature")
    assert (features["share_change_ci_low"] < 0).all() and (features["share_change_ci_high"] > 0).all()
    assert report.statistics["rows"] == {"reference": 20_000, "current": 20_000}
    assert report.statistics["tests"] == 1 + 5 * 3  # NDCG@k, then share, JS and PSI per feature
    ndcg = report.global_statistics["ndcg_at_k"]
    assert ndcg["ci95"][0] <= ndcg["value"] <= 1.0 and ndcg["p_value"] > 0.05
    json.dumps(report.to_dict(), allow_nan=False)  # strict JSON: no NaN anywhere


def test_a_feature_that_gains_importance_leads_the_alerts_and_a_barely_used_one_raises_none(runs) -> None:
    report = compare_runs(runs["reference"], runs["changed"], DriftSection())
    named = [f for alert in report.alerts for f in alert["features"]]
    assert named and set(named) == {"b"}, report.alerts
    assert {a["metric"] for a in report.alerts} == {"share_change", "js_distance", "psi"}
    share = next(a for a in report.alerts if a["metric"] == "share_change")
    # b's share: 0.8 / 2.605 = 0.307 before, 1.44 / 3.245 = 0.444 after (a's drops by 0.076)
    assert share["value"] == pytest.approx(0.137, abs=0.01) and share["ci95"][0] > 0.1
    assert share["p_adjusted"] < 1e-6
    assert all(a["p_adjusted"] >= a["p_value"] for a in report.alerts)
    assert [abs(a["effect"]) for a in report.alerts] == sorted(
        (abs(a["effect"]) for a in report.alerts), reverse=True
    )
    assert report.to_dict()["alerted_features"][0]["feature"] == "b"
    tiny = report.features.set_index("feature").loc["tiny"]
    # its attributions moved by two of their own standard deviations: a clear, significant
    # change in shape, yet a sliver of the model's importance
    assert tiny["js_distance"] > 0.5 and tiny["js_distance_p_value"] < 1e-6
    assert tiny["importance_moved"] < 0.01 < DriftSection().min_effect


def test_rules_decide_per_metric_and_feature(runs) -> None:
    settings = DriftSection(
        rules=[
            AlertRule(metric="psi", threshold=None),  # no PSI alert at all
            AlertRule(metric="js_distance", threshold=0.1, min_effect=0.0, features=["tiny"]),
        ]
    )
    assert rule_for(settings, "psi", "b").threshold is None
    assert rule_for(settings, "js_distance", "tiny").min_effect == 0.0
    assert rule_for(settings, "js_distance", "a").min_effect == settings.min_effect == 0.05
    report = compare_runs(runs["reference"], runs["changed"], settings)
    pairs = {(a["metric"], a["features"][0]) for a in report.alerts}
    assert pairs == {("share_change", "b"), ("js_distance", "b"), ("js_distance", "tiny")}


def test_decide_needs_threshold_significance_and_effect_together() -> None:
    rule = AlertRule(metric="js_distance", threshold=0.1, min_effect=0.05)

    def test(value: float, effect: float, p: float, feature: str) -> Check:
        return Check(rule, [feature], value, effect, [effect - 0.01, effect + 0.01], p, 0.05)

    tests = [
        test(0.3, 0.20, 1e-9, "all three"),
        test(0.3, 0.30, 0.03, "not significant once adjusted"),  # Holm: 0.03 * 2 > 0.05
        test(0.3, 0.01, 1e-9, "too small an effect"),
        test(0.05, 0.20, 1e-9, "below the threshold"),
        test(0.01, 0.0, 0.5, "nothing"),
    ]
    assert [a["features"] for a in decide(tests, 0.05)] == [["all three"]]
    # alone with it, the same p-value passes, and the larger effect comes first
    assert [a["features"] for a in decide(tests[:2], 0.05)] == [
        ["not significant once adjusted"],
        ["all three"],
    ]
    alert = decide(tests, 0.05)[0]
    assert alert["p_adjusted"] == pytest.approx(5e-9)
    assert alert["threshold"] == 0.1 and alert["min_effect"] == 0.05
