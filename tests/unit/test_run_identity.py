"""Run identity (issue 17): every run its own folder, never one run over another, one history
record per run, and the drift reference chosen from the history by partition and model version."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from ig_airflow import save_artifact
from ig_airflow.analysis.drift import append_history, read_history, reference_run, summarise_drift
from ig_airflow.config import DriftSection, RunConfig
from ig_airflow.dataset import previous_partition
from ig_airflow.exceptions import ConfigError, StorageError
from ig_airflow.identity import resolve_run, run_identity


def artifact(tmp_path: Path, seed: int) -> str:
    torch.manual_seed(seed)
    uri = str(tmp_path / f"model{seed}")
    save_artifact(
        nn.Sequential(nn.Linear(2, 1)),
        uri,
        inputs={"numeric": [{"name": "a"}, {"name": "b"}], "calling": "dense"},
    )
    return uri


def config(model: str, output: dict, **data: object) -> RunConfig:
    return RunConfig.model_validate(
        {"model": {"uri": model}, "data": {"input_uri": "rows.parquet", **data}, "output": output}
    )


def test_each_run_gets_its_own_folder_named_by_its_identity(tmp_path: Path) -> None:
    first, second = artifact(tmp_path, 0), artifact(tmp_path, 1)
    folder = "ds=2024-05-01/model={model_version}/run={run_id}"
    output = {
        "uri": str(tmp_path / "runs"),
        "run_folder": folder,
        "run_id": "scheduled__2024-05-01T03:00:00+00:00",
    }
    resolved = resolve_run(config(first, output))
    version = run_identity(config(first, output)).model_version
    assert resolved.output.uri == str(
        tmp_path / "runs" / "ds=2024-05-01" / f"model={version}" / "run=scheduled__2024-05-01T03_00_00_00_00"
    )
    assert resolve_run(resolved) == resolved  # idempotent: every task of the run agrees
    other = resolve_run(config(second, output))
    assert other.output.uri != resolved.output.uri  # another model version, another folder
    partitioned = resolve_run(
        config(first, {**output, "run_folder": "{partition}/{run_id}"}, partition={"ds": "x"})
    )
    assert partitioned.output.uri.endswith("/ds=x/scheduled__2024-05-01T03_00_00_00_00")
    with pytest.raises(ConfigError, match="must be a relative path inside output.uri"):
        resolve_run(config(first, {**output, "run_folder": "../{run_id}"}))
    with pytest.raises(ConfigError, match=r"unknown placeholder 'ds'"):
        resolve_run(config(first, {**output, "run_folder": "{ds}/{run_id}"}))


def test_a_run_never_overwrites_another_in_a_shared_folder(tmp_path: Path) -> None:
    first, second = artifact(tmp_path, 0), artifact(tmp_path, 1)
    shared = {"uri": str(tmp_path / "flat")}
    resolved = resolve_run(config(first, shared))
    Path(resolved.output.uri).mkdir(parents=True)
    identity = run_identity(resolved)
    (Path(resolved.output.uri) / "manifest.json").write_text(json.dumps({"run": identity.to_dict()}))
    assert resolve_run(config(first, shared)).output.uri == shared["uri"]  # the same run resumes
    with pytest.raises(StorageError, match=r"holds run 'manual' of model version .*output.run_folder"):
        resolve_run(config(second, shared))
    with pytest.raises(StorageError, match="this is run 'retry-2'"):
        resolve_run(config(first, {**shared, "run_id": "retry-2"}))


def one_feature_summary() -> pd.DataFrame:
    """A feature summary of one feature, as the history table records it."""
    return pd.DataFrame(
        {
            "feature": ["a"],
            "mean_abs_attribution": [1.0],
            "mean_attribution": [1.0],
            "share": [1.0],
            "rank": [1],
        }
    )


def test_history_keeps_one_record_per_run_and_picks_the_reference(tmp_path: Path) -> None:
    history = str(tmp_path / "history.parquet")
    summary = one_feature_summary()

    def record(day: str, version: str, run_id: str) -> dict[str, str]:
        run = {"run_key": day, "model_version": version, "run_id": run_id}
        append_history(history, run, summary, {"attributions_uri": f"{day}/{version}/{run_id}"})
        return run

    record("2024-05-01", "v1", "nightly")
    record("2024-05-02", "v1", "nightly")
    retrain = record("2024-05-02", "v2", "asset")
    before = Path(history).read_bytes()
    record("2024-05-02", "v2", "asset")  # a re-run of the same run: replaced, byte for byte
    assert Path(history).read_bytes() == before
    assert len(pd.read_parquet(history)) == 3  # one record per run

    assert (
        reference_run(history, "auto", retrain) == "2024-05-02/v1/nightly"
    )  # the previous version, same day
    assert reference_run(history, "previous_model_version", retrain) == "2024-05-02/v1/nightly"
    assert reference_run(history, "previous_run", retrain) == "2024-05-01/v1/nightly"
    first_of_v2 = {"run_key": "2024-05-03", "model_version": "v2", "run_id": "nightly"}
    assert reference_run(history, "auto", first_of_v2) == "2024-05-02/v2/asset"  # same version, earlier day
    assert reference_run(history, "previous_model_version", first_of_v2) is None


def test_previous_partition_follows_the_values_order(tmp_path: Path) -> None:
    for folder in ("ds=2024-01-01", "ds=2024-01-02", "ds=2024-01-10", "n=9", "n=10"):
        lake = tmp_path / ("days" if folder.startswith("ds") else "numbers") / folder
        lake.mkdir(parents=True)
        pd.DataFrame({"a": [1.0]}).to_parquet(lake / "part-0.parquet")
    days, numbers = str(tmp_path / "days"), str(tmp_path / "numbers")
    assert previous_partition(days, {"ds": "2024-01-10"}) == {"ds": "2024-01-02"}
    assert previous_partition(days, {"ds": "2024-01-01"}) is None  # the first
    assert previous_partition(days, {"ds": "2023-12-31"}) is None  # not in the dataset
    assert previous_partition(numbers, {"n": "10"}) == {"n": "9"}  # 9 before 10, as numbers


def test_drift_waits_for_the_previous_partitions_run(tmp_path: Path) -> None:
    """Partitions explained in parallel: the reference is the previous partition's run even when
    it is recorded after this run's drift started."""
    runs = {}
    for day, scale in (("2024-01-02", 1.0), ("2024-01-03", 2.0)):
        runs[day] = str(tmp_path / day / "attributions")
        Path(runs[day]).mkdir(parents=True)
        frame = pd.DataFrame({"row_id": range(50), "attr__a": [scale] * 50, "attr__b": [1.0] * 50})
        frame.to_parquet(Path(runs[day]) / "part-00000.parquet")
    history = str(tmp_path / "history.parquet")
    summary = one_feature_summary()
    late = threading.Timer(
        1.5,
        lambda: append_history(
            history,
            {"run_key": "2024-01-02", "model_version": "v1", "run_id": "r2"},
            summary,
            {"attributions_uri": runs["2024-01-02"], "partition": "ds=2024-01-02"},
        ),
    )
    late.start()
    settings = DriftSection(reference_uri="auto", history_uri=history, wait_for_reference_s=60)
    run = {"run_key": "2024-01-03", "partition": "ds=2024-01-03", "model_version": "v1", "run_id": "r3"}
    result = summarise_drift(runs["2024-01-03"], str(tmp_path / "drift3"), settings, run, "ds=2024-01-02")
    late.join()
    assert result["reference"] == runs["2024-01-02"]
    assert result["waited_for"]["found"] and 1.0 <= result["waited_for"]["seconds"] < 60
    recorded = read_history(history).set_index("run_key")
    assert recorded.loc["2024-01-03", "partition"].unique().tolist() == ["ds=2024-01-03"]

    never = {**run, "run_key": "2024-01-05", "partition": "ds=2024-01-05", "run_id": "r5"}
    short = settings.model_copy(update={"wait_for_reference_s": 0.5})
    alone = summarise_drift(runs["2024-01-03"], str(tmp_path / "drift5"), short, never, "ds=2024-01-04")
    assert alone["waited_for"]["found"] is False  # gave up after the wait, said so in drift.json
    assert alone["reference"] == runs["2024-01-03"]  # the history as it is: the latest earlier run
