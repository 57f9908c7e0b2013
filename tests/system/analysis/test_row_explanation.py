"""One row's explanation looked up in a finished run (library and `ig-airflow why`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ig_airflow.analysis.row_explanation import explain_prediction
from ig_airflow.config import parse_run_config
from ig_airflow.exceptions import InputDataError
from ig_airflow.pipeline import run_pipeline


@pytest.fixture(scope="module")
def run(demo, tmp_path_factory) -> dict:
    """A validated and explained run of 300 rows, two of them quarantined (unseen categories)."""
    tmp = tmp_path_factory.mktemp("why")
    rows = pd.read_parquet(demo["test"]).head(300).reset_index(drop=True)
    rows.loc[[7, 123], "workclass"] = "Space-agency"
    rows.to_parquet(tmp / "in.parquet", index=False)
    raw = yaml.safe_load(Path(demo["config"]).read_text())
    raw["data"]["input_uri"] = str(tmp / "in.parquet")
    raw["output"]["uri"] = str(tmp / "run")
    raw["ray"] = {"enabled": False}
    manifest = run_pipeline(parse_run_config(raw))
    return {"dir": str(tmp / "run"), "rows": rows, "manifest": manifest}


def test_explained_row_lists_features_by_attribution_with_values_and_baseline(run) -> None:
    row = run["rows"].iloc[42]
    explanation = explain_prediction(run["dir"], int(row["row_id"]))
    assert explanation.status == "explained" and explanation.ids == {"row_id": int(row["row_id"])}
    table = explanation.contributions
    attributions = pd.read_parquet(Path(run["dir"]) / "attributions").set_index("row_id")
    stored = attributions.loc[int(row["row_id"])]
    assert len(table) == 14
    for item in table.itertuples():
        assert item.attribution == stored[f"attr__{item.feature}"]
        assert item.value == row[item.feature]
        assert item.baseline == run["manifest"]["baseline"][item.feature]
    assert (np.diff(table["attribution"].abs().to_numpy()) <= 0).all()
    assert table["share"].sum() == pytest.approx(1.0)
    result = explanation.result
    assert result["prediction"] == stored["prediction"] and result["n_steps"] == stored["n_steps"]
    np.testing.assert_allclose(
        table["attribution"].sum() - result["delta"],
        result["prediction"] - result["baseline_prediction"],
        atol=1e-9,
    )
    text = explanation.to_text(top=3)
    assert table["feature"][0] in text and "... 11 more features" in text


def test_quarantined_row_reports_validation_reason(run) -> None:
    row_id = int(run["rows"].loc[123, "row_id"])
    explanation = explain_prediction(run["dir"], str(row_id))  # a string, as typed on a command line
    assert explanation.status == "quarantined"
    assert "workclass" in explanation.quarantine_reason
    assert explanation.quarantined_values == {"workclass": "Space-agency"}
    assert "quarantined by validation" in explanation.to_text()
    assert "workclass='Space-agency'" in explanation.to_text()


def test_unknown_or_malformed_ids_are_named(run) -> None:
    with pytest.raises(InputDataError, match=r"attributions: no row with \{'row_id': 424242\}"):
        explain_prediction(run["dir"], 424242)
    with pytest.raises(InputDataError, match=r"row_id='x1' is not a valid int64"):
        explain_prediction(run["dir"], "x1")
    with pytest.raises(InputDataError, match=r"ids \['id', 'row_id'\] do not match the run's id columns"):
        explain_prediction(run["dir"], {"row_id": 1, "id": 2})
    with pytest.raises(InputDataError, match="no such run manifest"):
        explain_prediction(str(Path(run["dir"]) / "nope"), 1)


def test_why_command_prints_the_table_and_json(run) -> None:
    row_id = str(run["rows"].loc[5, "row_id"])
    command = [sys.executable, "-m", "ig_airflow.cli", "why", run["dir"], "--id", row_id]
    text = subprocess.run([*command, "--top", "4"], capture_output=True, text=True, timeout=300)
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith(f"row_id={row_id}: prediction") and "... 10 more features" in text.stdout
    as_json = subprocess.run([*command, "--json", "--top", "0"], capture_output=True, text=True, timeout=300)
    payload = json.loads(as_json.stdout)
    assert payload["status"] == "explained" and len(payload["contributions"]) == 14
    missing = subprocess.run([*command[:-1], "999999999"], capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "no row with {'row_id': 999999999}" in missing.stderr
