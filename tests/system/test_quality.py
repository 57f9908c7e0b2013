"""The quality stage on the Adult demo model, end to end: a run explained by the pipeline, then
its explanations measured (deletion/insertion against a random and a permutation-importance
order, infidelity, max-sensitivity, the model-randomisation check) and in the report; the same
run with its attributions scrambled fails the stage."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ig_airflow.cli import main
from ig_airflow.config import parse_run_config
from ig_airflow.exceptions import QualityCheckFailed
from ig_airflow.io import read_json
from ig_airflow.layout import RunLayout
from ig_airflow.pipeline import run_pipeline
from ig_airflow.quality.stage import assess_quality
from ig_airflow.testing.scrambled import scramble_attributions


def config(demo: dict[str, str], input_uri: str, run: Path, **quality):
    raw = {
        "model": {"uri": demo["artifact"]},
        "data": {"input_uri": input_uri, "id_columns": ["row_id"], "reference_uri": demo["train"]},
        "ig": {"tolerance": 0.01},
        "ray": {"enabled": False},
        "quality": {"sample_rows": 256, **quality},
        "output": {"uri": str(run)},
    }
    return parse_run_config(raw, "test_quality", {})


@pytest.fixture(scope="module")
def explained(demo, tmp_path_factory) -> tuple[dict[str, str], str, Path]:
    """1,500 test rows explained by the pipeline (quality stage included)."""
    root = tmp_path_factory.mktemp("quality")
    rows = root / "rows.parquet"
    pd.read_parquet(demo["test"]).head(1500).to_parquet(rows)
    run = root / "run"
    run_pipeline(config(demo, str(rows), run))
    return demo, str(rows), run


def test_ig_beats_random_and_permutation_order_and_passes_the_randomisation_check(explained) -> None:
    demo, rows, run = explained
    quality = read_json(RunLayout(str(run)).quality.json)
    deletion, insertion = quality["deletion"]["auc"], quality["insertion"]["auc"]
    print("deletion AUC", deletion, "insertion AUC", insertion, "randomisation", quality["randomisation"])
    assert deletion["ig"] < deletion["permutation"] < deletion["random"]
    assert insertion["ig"] > insertion["random"]
    assert quality["deletion"]["gain_over_random"]["ci95"][0] > 0
    assert quality["randomisation"]["row_spearman_mean"] < 0.5
    assert quality["passed"] and all(check["passed"] for check in quality["checks"])
    assert quality["rows"] == 256 and quality["rows_scored"] + quality["rows_barely_moved"] == 256
    assert quality["infidelity"]["normalized_mean"] <= quality["infidelity"]["mean"]
    assert 0 < quality["max_sensitivity"]["mean"] <= quality["max_sensitivity"]["max"]
    curve = quality["deletion"]["curve"]["ig"]
    assert curve[0] == pytest.approx(1.0) and curve[-1] == pytest.approx(0.0)
    manifest = read_json(RunLayout(str(run)).manifest)
    assert manifest["quality"]["passed"] is True
    report = (run / "report" / "report.html").read_text()
    assert "Quality of the explanations" in report and 'data-file="quality_deletion.png"' in report
    assert (run / "report" / "quality_insertion.png").stat().st_size > 5000


def test_scrambled_attributions_fail_the_stage(explained, tmp_path: Path, capsys) -> None:
    demo, rows, run = explained
    scrambled = tmp_path / "scrambled"
    shutil.copytree(run, scrambled)
    assert scramble_attributions(str(scrambled), seed=3) == 1500
    warned = assess_quality(config(demo, rows, scrambled, randomisation=False))
    check = {c["name"]: c for c in warned["checks"]}["deletion_better_than_random"]
    assert not warned["passed"] and not check["passed"], check
    with pytest.raises(QualityCheckFailed, match="deletion AUC"):
        assess_quality(config(demo, rows, scrambled, randomisation=False, on_fail="fail"))
    assert read_json(RunLayout(str(scrambled)).quality.json)["passed"] is False  # written, then raised
    # the command line: exit status 2, the failed check named
    settings = config(demo, rows, scrambled, randomisation=False, on_fail="fail").model_dump(mode="json")
    path = tmp_path / "quality.yaml"
    path.write_text(yaml.safe_dump(settings))
    assert main(["quality", "--config", str(path)]) == 2
    assert "deletion AUC" in capsys.readouterr().err


def test_a_different_model_is_refused(explained, tmp_path: Path) -> None:
    """The stage measures the run's own model: another artifact does not reproduce its predictions."""
    from ig_airflow.demo.prepare import train_demo_torch
    from ig_airflow.exceptions import InputDataError

    demo, rows, run = explained
    other = tmp_path / "other_model"
    train_demo_torch(pd.read_parquet(demo["train"]), other, seed=5, epochs=1)  # another model will do
    original = config(demo, rows, run)
    changed = original.model_copy(update={"model": original.model.model_copy(update={"uri": str(other)})})
    with pytest.raises(InputDataError, match="does not reproduce the run's predictions"):
        assess_quality(changed)
