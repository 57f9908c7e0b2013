"""Where a shift comes from, on the demo explained for real: with two model versions (the demo
model, and one trained on a label that leaks age) the change in each feature's mean |attribution|
splits into a model part and a data part that add up to it, agree with the split computed from
full cross runs, and put a pure model change (the same rows) in the model part; one model
version, or a reference whose artifact is gone, records why there is no split; the report shows
the section."""

from __future__ import annotations

import html
import re
import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ig_airflow.analysis.aggregation import feature_summary
from ig_airflow.analysis.drift import summarise_drift
from ig_airflow.config import parse_run_config
from ig_airflow.io import read_json
from ig_airflow.layout import RunLayout
from ig_airflow.pipeline import run_drift
from ig_airflow.quality.cross_terms import cross_terms
from ig_airflow.run.local import run_explain

ROWS = 400  # rows of each run
SAMPLE = 256  # rows of each run explained again by the other model


def config(demo: dict[str, str], out: Path, artifact: str, reference: Path | None = None):
    """The demo's run config for the rows in ``out``.parquet (in process, no validation)."""
    raw = {
        "model": {"uri": artifact},
        "data": {"input_uri": str(out.with_suffix(".parquet")), "id_columns": ["row_id"]},
        "ig": {"n_steps": 16, "tolerance": 0.02},
        "ray": {"enabled": False},
        "validation": {"enabled": False},
        "output": {"uri": str(out)},
    }
    raw["data"]["reference_uri"] = demo["train"]
    if reference is not None:
        raw["drift"] = {
            "reference_uri": str(reference),
            "decomposition": {"sample_rows": SAMPLE},
            "waterfall_rows": 1,
        }
    return parse_run_config(raw)


def explain(demo: dict[str, str], rows: pd.DataFrame, out: Path, artifact: str) -> Path:
    rows.to_parquet(out.with_suffix(".parquet"), index=False)
    run_explain(config(demo, out, artifact))
    return out


def drift(demo: dict[str, str], current: Path, artifact: str, reference: Path, report: bool = False) -> dict:
    """The drift stage of the run ``current`` (model ``artifact``) against ``reference`` with the
    extra IG pass (and with ``report``, the stage's report); returns drift.json's ``decomposition``."""
    run = config(demo, current, artifact, reference)
    if report:
        return run_drift(run)[0]["decomposition"]
    layout = RunLayout.of(run)
    extra_pass = partial(cross_terms, run)
    return summarise_drift(layout.attributions, layout.drift.root, run.drift, "run", cross_terms=extra_pass)[
        "decomposition"
    ]


@pytest.fixture(scope="module")
def runs(demo, demo_frames, tmp_path_factory) -> dict:
    """Model m1 (the demo's) and m2 (trained on a label that leaks age) on d1 (test rows) and d2
    (other test rows, all aged 45 or more): the four runs ``r<model><data>``."""
    from ig_airflow.demo.prepare import train_demo_torch

    root = tmp_path_factory.mktemp("decomposition")
    train = demo_frames[0].sample(8000, random_state=0)
    train["label"] = ((train["age"] > 50) | (train["label"] == 1)).astype(np.int64)
    leaky = str(root / "leaky")
    train_demo_torch(train, Path(leaky), epochs=2)
    test = demo_frames[1]
    d1, rest = test.iloc[:ROWS], test.iloc[ROWS:]
    d2 = rest[rest["age"] >= 45].head(ROWS)
    models = {"1": demo["artifact"], "2": leaky}
    found = {"models": models, "root": root, "d1": d1}
    for name, model, rows in (("r11", "1", d1), ("r22", "2", d2), ("r21", "2", d1), ("r12", "1", d2)):
        found[name] = explain(demo, rows, root / name, models[model])
    return found


@pytest.fixture(scope="module")
def both(demo, runs) -> dict:
    """The drift of m2 on d2 against m1 on d1 (with its report): drift.json's decomposition."""
    return drift(demo, runs["r22"], runs["models"]["2"], runs["r11"], report=True)


def mean_abs(run: Path) -> pd.Series:
    return feature_summary(str(RunLayout(str(run)).attributions)).set_index("feature")["mean_abs_attribution"]


def test_model_and_data_parts_add_up_and_match_full_cross_runs(runs, both) -> None:
    found = both
    assert found["available"], found
    parts = pd.DataFrame(found["features"]).set_index("feature")
    # model + data = total, per feature, within 1% (by construction: exact up to rounding)
    gap = (parts["model"] + parts["data"] - parts["total"]).abs()
    assert (gap <= 0.01 * parts["total"].abs() + 1e-12).all(), gap
    g = {name: mean_abs(runs[f"r{name}"]) for name in ("11", "22", "12", "21")}
    np.testing.assert_allclose(parts["total"], (g["22"] - g["11"])[parts.index], rtol=1e-9, atol=1e-12)
    # the sample's split agrees with the split from the full cross runs (G12, G21 on every row)
    exact_model = 0.5 * ((g["22"] - g["12"]) + (g["21"] - g["11"]))
    exact_data = 0.5 * ((g["22"] - g["21"]) + (g["12"] - g["11"]))
    exact_share = exact_model.abs().sum() / (exact_model.abs().sum() + exact_data.abs().sum())
    assert abs(found["model_share"] - exact_share) < 0.05, (found["model_share"], exact_share)
    low, high = found["model_share_ci95"]
    assert low <= found["model_share"] <= high and high - low < 0.25
    age = parts.loc["age"]
    assert age["model_ci_low"] <= exact_model["age"] <= age["model_ci_high"], (age, exact_model["age"])
    assert age["model"] > 0.05 and parts.index[0] == "age"  # the leak: the largest part
    assert found["models"]["reference"] != found["models"]["current"] != ""
    print(f"{found['summary']} Full cross runs: share {exact_share:.3f}, age model {exact_model['age']:.4f}")
    print(f"age {age.to_dict()}; {found['seconds']} s")
    assert found["sample_rows"] == {"reference": SAMPLE, "current": SAMPLE}
    # the signed mean splits the same way; the per-feature table beside drift.json
    signed = (parts["signed_model"] + parts["signed_data"] - parts["signed_total"]).abs()
    assert (signed <= 1e-9).all()
    table = pd.read_parquet(found["table"])
    assert list(table["feature"]) == list(parts.index) and Path(found["table"]).parent.name == "drift"
    assert f"{found['model_share']:.0%} of the change" in found["summary"]


def test_a_pure_model_change_lands_in_the_model_part(demo, runs) -> None:
    found = drift(demo, runs["r21"], runs["models"]["2"], runs["r11"])  # both models on d1
    parts = pd.DataFrame(found["features"]).set_index("feature")
    model_l1, data_l1 = parts["model"].abs().sum(), parts["data"].abs().sum()
    assert data_l1 < 0.1 * model_l1, (data_l1, model_l1)
    assert (parts["model"] - parts["total"]).abs().sum() < 0.1 * parts["total"].abs().sum()
    print(
        f"pure model change: model L1 {model_l1:.4f}, data L1 {data_l1:.4f}, share {found['model_share']:.3f}"
    )
    assert found["model_share"] > 0.9 and found["summary"].startswith(f"{found['model_share']:.0%}")


def test_one_model_version_or_a_missing_artifact_records_why_there_is_no_split(
    demo, runs, tmp_path: Path
) -> None:
    found = drift(demo, runs["r12"], runs["models"]["1"], runs["r11"])  # m1 on both periods
    assert found == {"available": False, "reason": found["reason"]}
    assert "both runs explain model version" in found["reason"]
    # a reference explained with an artifact since deleted: recorded, and drift still reports
    gone = tmp_path / "gone_artifact"
    shutil.copytree(runs["models"]["1"], gone)
    reference = explain(demo, runs["d1"].head(100), tmp_path / "reference", str(gone))
    shutil.rmtree(gone)
    found = drift(demo, runs["r21"], runs["models"]["2"], reference)
    assert not found["available"] and "cannot be loaded" in found["reason"], found
    drift_json = read_json(RunLayout(str(runs["r21"])).drift.json)
    assert drift_json["decomposition"] == found and drift_json["ndcg_at_k"] is not None


def test_the_report_shows_where_the_change_comes_from(runs, both) -> None:
    found = both
    report = RunLayout(str(runs["r22"])).report
    source = Path(report.html).read_text()
    section = re.search(r'<section id="shift">(.*?)</section>', source, re.S)
    assert section, "no section shift"
    text = html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", section.group(1))))
    assert "Where the change comes from" in text and found["summary"] in text
    assert "<td>age</td>" in section.group(1) and "data:image/png;base64," in section.group(1)
    assert Path(report.image("shift.png")).stat().st_size > 0
