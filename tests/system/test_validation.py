"""Validation with real Great Expectations: the bad-input matrix, policies, row accounting."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml

from ig_airflow.artifacts import read_metadata
from ig_airflow.config import ValidationSection, load_run_config
from ig_airflow.exceptions import ConfigError, ValidationFailed
from ig_airflow.pipeline import run_pipeline
from ig_airflow.spec import OOV_TOKEN
from ig_airflow.testing.outputs import dataset_bytes
from ig_airflow.validation import REASON_COLUMN, ROW_NUMBER_COLUMN, validate_inputs, validate_table


@pytest.fixture(scope="module")
def spec(demo):
    return read_metadata(demo["artifact"]).inputs


@pytest.fixture()
def rows(demo_frames) -> pd.DataFrame:
    return demo_frames[1].head(200).copy()


def validate(frame: pd.DataFrame, spec, **settings):
    outcome = validate_table(
        pa.Table.from_pandas(frame, preserve_index=False), spec, ["row_id"], ValidationSection(**settings)
    )
    rows = outcome.report["rows"]
    assert rows["input"] == rows["validated"] + rows["quarantined"] == len(frame)
    return outcome


def test_clean_rows_all_pass(rows, spec) -> None:
    outcome = validate(rows, spec)
    assert outcome.report["rows"]["validated"] == 200 and outcome.report["failed_expectations"] == []


def test_unseen_category_skip_quarantines_with_reason(rows, spec) -> None:
    rows.loc[rows.index[[3, 7, 9]], "occupation"] = "Astronaut"
    outcome = validate(rows, spec, policy="skip")
    q = outcome.quarantine.to_pandas()
    assert q[ROW_NUMBER_COLUMN].tolist() == [3, 7, 9]
    assert set(q[REASON_COLUMN]) == {"expect_column_values_to_be_in_set(occupation)"}
    assert q["occupation"].tolist() == ["Astronaut"] * 3
    failed = outcome.report["failed_expectations"]
    assert failed == [
        {
            "expectation": "expect_column_values_to_be_in_set(occupation)",
            "column": "occupation",
            "kind": "feature",
            "unexpected_count": 3,
        }
    ]


def test_unseen_category_map_to_default_counts_per_value(rows, spec) -> None:
    rows.loc[rows.index[[1, 2]], "occupation"] = "Astronaut"
    rows.loc[rows.index[4], "occupation"] = "Pilot"
    rows.loc[rows.index[5], "race"] = "Klingon"
    outcome = validate(rows, spec, policy="map_to_default", defaults={"race": "White"})
    assert outcome.report["rows"] == {
        "input": 200,
        "validated": 200,
        "quarantined": 0,
        "mapped_to_default": 4,
    }
    assert outcome.report["mapped"] == {"occupation": {"Astronaut": 2, "Pilot": 1}, "race": {"Klingon": 1}}
    validated = outcome.validated.to_pandas()
    assert validated.loc[[1, 2, 4], "occupation"].tolist() == [OOV_TOKEN] * 3
    assert validated.loc[5, "race"] == "White"


def test_unseen_category_fail_names_column_and_count(rows, spec) -> None:
    rows.loc[rows.index[:4], "workclass"] = "Guild"
    with pytest.raises(ValidationFailed, match=r"expect_column_values_to_be_in_set\(workclass\): 4 row\(s\)"):
        validate(rows, spec, policy="fail")


def test_feature_policy_overrides_run_policy(rows, spec) -> None:
    rows.loc[rows.index[0], "workclass"] = "Guild"
    rows.loc[rows.index[1], "sex"] = "Other"
    outcome = validate(rows, spec, policy="skip", feature_policies={"sex": "map_to_default"})
    assert outcome.report["rows"]["quarantined"] == 1 and outcome.report["mapped"] == {"sex": {"Other": 1}}


def test_missing_column_always_fails(rows, spec) -> None:
    with pytest.raises(ValidationFailed, match=r"missing column\(s\) \['education_num'\]"):
        validate(rows.drop(columns=["education_num"]), spec, policy="skip")


def test_extra_column_passes_through_or_fails_when_disallowed(rows, spec) -> None:
    rows = rows.drop(columns=["label"])
    rows["note"] = "hello"
    outcome = validate(rows, spec)
    assert outcome.validated.column("note").to_pylist() == ["hello"] * 200
    with pytest.raises(ValidationFailed, match=r"unexpected column\(s\) \['note'\]"):
        validate(rows, spec, allow_extra_columns=False)


def test_string_in_numeric_column_is_a_row_failure(rows, spec) -> None:
    frame = rows.astype({"age": str})
    frame.loc[frame.index[[2, 6]], "age"] = "forty"
    frame.loc[frame.index[3], "age"] = "41"  # a castable string is fine
    outcome = validate(frame, spec)
    q = outcome.quarantine.to_pandas()
    assert q[ROW_NUMBER_COLUMN].tolist() == [2, 6]
    assert all(r.startswith("expect_column_values_to_be_castable_to_float64(age)") for r in q[REASON_COLUMN])
    assert outcome.validated.to_pandas().loc[2, "age"] == 41.0  # row 3 moved up one place


def test_numeric_column_with_no_numbers_is_a_schema_failure(rows, spec) -> None:
    frame = rows.astype({"hours_per_week": object})
    frame["hours_per_week"] = "many"
    with pytest.raises(
        ValidationFailed, match=r"column 'hours_per_week' has dtype .* none of its 200 values"
    ):
        validate(frame, spec, policy="skip")


def test_nan_and_inf_are_quarantined_or_defaulted(rows, spec) -> None:
    rows.loc[rows.index[1], "capital_gain"] = np.nan
    rows.loc[rows.index[2], "capital_gain"] = np.inf
    rows.loc[rows.index[3], "fnlwgt"] = -np.inf
    outcome = validate(rows, spec)
    reasons = dict(
        zip(
            outcome.quarantine.column(ROW_NUMBER_COLUMN).to_pylist(),
            outcome.quarantine.column(REASON_COLUMN).to_pylist(),
            strict=True,
        )
    )
    assert reasons == {
        1: "expect_column_values_to_not_be_null(capital_gain)",
        2: "expect_column_values_to_be_between(capital_gain)",
        3: "expect_column_values_to_be_between(fnlwgt)",
    }
    mapped = validate(rows, spec, policy="map_to_default", defaults={"capital_gain": 0.0})
    assert mapped.report["mapped"] == {"capital_gain": {"<null>": 1, "inf": 1}}
    assert mapped.report["rows"]["quarantined"] == 1  # fnlwgt has no default


def test_null_and_duplicate_ids(rows, spec) -> None:
    rows["row_id"] = rows["row_id"].astype("float64")
    rows.loc[rows.index[0], "row_id"] = np.nan
    rows.loc[rows.index[5], "row_id"] = rows.loc[rows.index[6], "row_id"]
    outcome = validate(rows, spec, policy="map_to_default")  # ids cannot be mapped: quarantined
    assert outcome.quarantine.column(ROW_NUMBER_COLUMN).to_pylist() == [0, 5, 6]
    with pytest.raises(ValidationFailed) as err:
        validate(rows, spec, policy="fail")
    assert "expect_column_values_to_not_be_null(row_id): 1 row(s)" in str(err.value)
    assert "expect_column_values_to_be_unique(row_id): 2 row(s)" in str(err.value)


def test_empty_file_gives_empty_outputs_or_fails_under_min_rows(rows, spec) -> None:
    outcome = validate(rows.head(0), spec)
    assert outcome.validated.num_rows == 0 and outcome.quarantine.num_rows == 0
    with pytest.raises(ValidationFailed, match=r"0 rows, fewer than validation.min_rows=1"):
        validate(rows.head(0), spec, min_rows=1)


def test_user_expectation_from_config(rows, spec) -> None:
    rows.loc[rows.index[[0, 1]], "age"] = 120.0
    outcome = validate(
        rows,
        spec,
        expectations=[
            {
                "type": "expect_column_values_to_be_between",
                "kwargs": {"column": "age", "min_value": 17, "max_value": 99},
            }
        ],
    )
    assert outcome.quarantine.column(ROW_NUMBER_COLUMN).to_pylist() == [0, 1]
    with pytest.raises(ConfigError, match=r"validation.expectations\[0\].type: unknown GX expectation"):
        validate(rows, spec, expectations=[{"type": "expect_magic"}])


def test_bad_policy_settings_are_config_errors(rows, spec) -> None:
    with pytest.raises(ConfigError, match="validation.defaults.age: a numeric feature under map_to_default"):
        validate(rows, spec, feature_policies={"age": "map_to_default"})
    with pytest.raises(ConfigError, match=r"validation.defaults.race: 'Vulcan' is not in the vocabulary"):
        validate(rows, spec, defaults={"race": "Vulcan"})


def test_outputs_gx_json_docs_and_failure_report(rows, spec, tmp_path: Path) -> None:
    rows.loc[rows.index[0], "sex"] = "?"
    rows.to_parquet(tmp_path / "in.parquet", index=False)
    report = validate_inputs(
        str(tmp_path / "in.parquet"), spec, ["row_id"], ValidationSection(data_docs=True), str(tmp_path / "v")
    )
    names = sorted(p.name for p in (tmp_path / "v").iterdir())
    assert names == ["data_docs", "gx_result.json", "quarantine", "report.json", "validated"]
    gx_result = json.loads((tmp_path / "v" / "gx_result.json").read_text())
    assert gx_result["success"] is False and len(gx_result["results"]) > 40
    html = (tmp_path / "v" / "data_docs" / "index.html").read_text()
    assert "<html" in html.lower() and report["rows"]["quarantined"] == 1
    with pytest.raises(ValidationFailed):
        validate_inputs(
            str(tmp_path / "in.parquet"),
            spec,
            ["row_id"],
            ValidationSection(policy="fail"),
            str(tmp_path / "v"),
        )
    assert not (tmp_path / "v" / "validated").exists()  # no stale outputs after a failed run
    assert json.loads((tmp_path / "v" / "report.json").read_text())["failure"]


@pytest.mark.parametrize("policy", ["skip", "map_to_default"])
def test_demo_with_injected_unseen_categories_explains_only_valid_rows(demo, tmp_path: Path, policy) -> None:
    frame = pd.read_parquet(demo["test"]).head(600)
    injected = frame.sample(40, random_state=0).index
    frame.loc[injected[:20], "native_country"] = "Atlantis"
    frame.loc[injected[20:], "education"] = "Hogwarts"
    frame.to_parquet(tmp_path / "in.parquet", index=False)
    config = yaml.safe_load(Path(demo["config"]).read_text())
    config["data"]["input_uri"] = str(tmp_path / "in.parquet")
    config["output"]["uri"] = str(tmp_path / "run")
    config["validation"] = {"policy": policy}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    manifest = run_pipeline(load_run_config(tmp_path / "run.yaml"))
    explained = pd.read_parquet(tmp_path / "run" / "attributions")
    validated = pd.read_parquet(tmp_path / "run" / "validation" / "validated")
    bad_ids = set(frame.loc[injected, "row_id"])
    vocab = {
        f.name: set(f.vocabulary) | {OOV_TOKEN} for f in read_metadata(demo["artifact"]).inputs.categorical
    }
    for column, values in vocab.items():
        assert validated[column].isin(values).all()
    if policy == "skip":
        assert set(explained.row_id).isdisjoint(bad_ids) and len(explained) == 560
        assert manifest["validation"]["rows"]["quarantined"] == 40
    else:
        assert bad_ids <= set(explained.row_id) and len(explained) == 600
        assert manifest["validation"]["mapped"] == {
            "education": {"Hogwarts": 20},
            "native_country": {"Atlantis": 20},
        }
    files = ["validation/validated", "validation/quarantine", "attributions"]
    before = {f: dataset_bytes(tmp_path / "run" / f) for f in files}
    run_pipeline(load_run_config(tmp_path / "run.yaml"))
    assert {f: dataset_bytes(tmp_path / "run" / f) for f in files} == before


def test_gx_file_context_when_configured(rows, spec, tmp_path: Path) -> None:
    outcome = validate(rows.head(20), spec, gx_project_root=str(tmp_path / "gx_project"))
    assert outcome.report["rows"]["validated"] == 20
    assert (tmp_path / "gx_project" / "gx" / "great_expectations.yml").exists()


def test_a_validation_logs_a_few_lines_at_info(rows, spec, caplog) -> None:
    import logging

    caplog.set_level(logging.INFO)
    validate(rows, spec)
    assert len(caplog.records) <= 10, [r.getMessage()[:80] for r in caplog.records]
    assert not [
        r for r in caplog.records if r.name.startswith("great_expectations") and r.levelno < logging.WARNING
    ]


@pytest.mark.parametrize("policy", ["skip", "map_to_default"])
def test_streamed_batches_give_the_whole_input_result(demo_frames, spec, tmp_path: Path, policy) -> None:
    """Four GX batches write what one batch over the whole input writes, row for row, including
    an id repeated in two different batches and a failure in the last one."""
    frame = demo_frames[1].head(1000).reset_index(drop=True)
    frame.loc[700, "row_id"] = frame.loc[10, "row_id"]  # the same id in batch 0 and in batch 2
    frame.loc[[950, 951], "occupation"] = "Astronaut"  # the last batch
    frame.loc[420, "age"] = None
    source = tmp_path / "in"
    source.mkdir()
    for part in range(2):  # two files: batches also cross a file boundary
        frame.iloc[part * 500 : (part + 1) * 500].to_parquet(source / f"part-{part}.parquet", index=False)
    whole = validate_inputs(
        str(source), spec, ["row_id"], ValidationSection(policy=policy), str(tmp_path / "whole")
    )
    streamed = validate_inputs(
        str(source), spec, ["row_id"], ValidationSection(policy=policy, batch_rows=300), str(tmp_path / "s")
    )
    assert streamed["batches"] == 4 and len(list((tmp_path / "s" / "validated").glob("*.parquet"))) == 4
    for key in ("rows", "mapped", "quarantine_reasons"):
        assert streamed[key] == whole[key], key
    assert {e["expectation"]: e["unexpected_count"] for e in streamed["failed_expectations"]} == {
        e["expectation"]: e["unexpected_count"] for e in whole["failed_expectations"]
    }
    for output in ("validated", "quarantine"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(tmp_path / "s" / output), pd.read_parquet(tmp_path / "whole" / output)
        )
    quarantine = pd.read_parquet(tmp_path / "s" / "quarantine").set_index(ROW_NUMBER_COLUMN)
    assert {10, 700} <= set(quarantine.index)  # both rows of the repeated id, by their input row number
    assert "expect_column_values_to_be_unique(row_id)" in quarantine.loc[700, REASON_COLUMN]
    gx_result = json.loads((tmp_path / "s" / "gx_result.json").read_text())
    assert [b["rows"] for b in gx_result["batches"]] == [[0, 300], [300, 600], [600, 900], [900, 1000]]
    with pytest.raises(ValidationFailed, match=r"fewer than validation.min_rows=1001"):
        validate_inputs(str(source), spec, ["row_id"], ValidationSection(min_rows=1001, batch_rows=300), "x")
