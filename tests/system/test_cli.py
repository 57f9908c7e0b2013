"""The ig-airflow command line, run as a user would (a real subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml
from conftest import write_config

from ig_airflow.testing.outputs import dataset_bytes


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ig_airflow.cli", *args], capture_output=True, text=True, timeout=600
    )


def demo_config(demo: dict, out: Path, **overrides) -> dict:
    config = yaml.safe_load(Path(demo["config"]).read_text())
    config["output"]["uri"] = str(out / "{{ ds }}")
    config.update(overrides)
    return config


def test_help_explains_every_option() -> None:
    result = run_cli("explain", "--help")
    assert result.returncode == 0
    assert "--config" in result.stdout and "--set" in result.stdout and "placeholder" in result.stdout


def test_explain_end_to_end_is_reproducible(demo, tmp_path: Path) -> None:
    rows = pd.read_parquet(demo["test"]).head(500)
    rows.to_parquet(tmp_path / "in.parquet", index=False)
    config = demo_config(demo, tmp_path / "runs")
    config["data"]["input_uri"] = str(tmp_path / "in.parquet")
    path = write_config(tmp_path / "run.yaml", config)
    first = run_cli("explain", "--config", str(path), "--set", "ds=2024-03-01")
    assert first.returncode == 0, first.stderr
    assert "shards 1/1 done" in first.stderr and "starting an embedded local Ray" in first.stderr
    out_dir = tmp_path / "runs" / "2024-03-01"
    visible = sorted(p.name for p in out_dir.iterdir() if not p.name.startswith("."))  # the lease is hidden
    assert visible == ["attributions", "manifest.json", "shards"]
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["rows"]["explained"] == 500
    assert manifest["completeness"]["mean_error"] <= 0.01
    assert manifest["artifact"]["files"]["model.pt"]
    frame = pd.read_parquet(out_dir / "attributions")
    assert frame["row_id"].tolist() == rows["row_id"].tolist()
    before = dataset_bytes(out_dir / "attributions")
    again = run_cli("explain", "--config", str(path), "--set", "ds=2024-03-01")
    assert again.returncode == 0
    assert "1 already done for these hashes, 0 to compute" in again.stderr
    assert dataset_bytes(out_dir / "attributions") == before
    config["ray"] = {"enabled": False}  # the in-process engine writes the same bytes
    in_process = run_cli(
        "explain", "--config", str(write_config(tmp_path / "local.yaml", config)), "--set", "ds=local"
    )
    assert in_process.returncode == 0 and "explained 500/500 rows" in in_process.stderr
    local = pd.read_parquet(tmp_path / "runs" / "local" / "attributions")
    pd.testing.assert_frame_equal(local, frame, atol=1e-6)


def test_bad_config_fails_with_key_path_and_writes_nothing(demo, tmp_path: Path) -> None:
    config = demo_config(demo, tmp_path / "runs")
    config["ig"]["n_stepz"] = 5
    path = write_config(tmp_path / "run.yaml", config)
    result = run_cli("explain", "--config", str(path))
    assert result.returncode == 2
    assert "ig.n_stepz: unknown key" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_missing_column_fails_naming_file_and_column_and_leaves_no_partial_file(demo, tmp_path: Path) -> None:
    pd.read_parquet(demo["test"]).head(50).drop(columns=["age"]).to_parquet(tmp_path / "in.parquet")
    config = demo_config(demo, tmp_path / "runs")
    config["data"]["input_uri"] = str(tmp_path / "in.parquet")
    result = run_cli("explain", "--config", str(write_config(tmp_path / "run.yaml", config)), "--set", "ds=x")
    assert result.returncode == 2
    assert "in.parquet: missing column(s) ['age']" in result.stderr
    out = tmp_path / "runs" / "x"
    assert not out.exists() or list(out.iterdir()) == []


def test_malformed_yaml_exit_code_and_message(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("model: {uri: [\n")
    result = run_cli("explain", "--config", str(tmp_path / "bad.yaml"))
    assert result.returncode == 2 and "malformed YAML" in result.stderr


def test_demo_with_a_torch_export_model_runs_end_to_end(tmp_path: Path) -> None:
    prepared = run_cli("demo", "prepare", "--out", str(tmp_path / "demo"), "--torch-loader", "torch_export")
    assert prepared.returncode == 0, prepared.stderr
    paths = json.loads(prepared.stdout)
    artifact = json.loads((Path(paths["artifact"]) / "ig_artifact.json").read_text())
    assert artifact["loader"] == "torch_export" and set(artifact["files"]) == {"model.pt2"}
    config = yaml.safe_load(Path(paths["config"]).read_text())
    pd.read_parquet(paths["test"]).head(400).to_parquet(tmp_path / "in.parquet", index=False)
    config["data"]["input_uri"] = str(tmp_path / "in.parquet")
    result = run_cli("run", "--config", str(write_config(tmp_path / "run.yaml", config)), "--set", "ds=x")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "demo" / "runs" / "x" / "manifest.json").read_text())
    assert manifest["artifact"]["loader"] == "torch_export"
    assert manifest["rows"]["explained"] + manifest["validation"]["rows"]["quarantined"] == 400
    assert manifest["completeness"]["mean_error"] <= 0.01
    # `run` is the whole pipeline, as the explain DAG runs it: summary, drift, history and report
    run = tmp_path / "demo" / "runs" / "x"
    printed = json.loads(result.stdout)
    assert (
        printed["summary"]["top_features"] == manifest["summary"]["top_features"]
        and len(printed["summary"]["top_features"]) == 5
    )
    assert (run / "summary" / "feature_summary.parquet").exists() and (
        run / "summary" / "category_summary.parquet"
    ).exists()
    assert json.loads((run / "drift" / "drift.json").read_text())["run_key"] == "x"
    assert (run / "report" / "report.html").exists() and manifest["drift"]["report"].endswith("report.html")


def test_run_ids_give_each_run_its_folder_and_a_shared_folder_is_never_overwritten(
    demo, tmp_path: Path
) -> None:
    pd.read_parquet(demo["test"]).head(200).to_parquet(tmp_path / "in.parquet", index=False)
    config = demo_config(demo, tmp_path / "runs")
    config["data"]["input_uri"] = str(tmp_path / "in.parquet")
    config["ray"] = {"enabled": False}
    config["output"] = {
        "uri": str(tmp_path / "runs"),
        "run_folder": "ds={{ ds }}/model={model_version}/run={run_id}",
    }
    path = write_config(tmp_path / "run.yaml", config)
    for run_id in ("first", "second"):
        result = run_cli("explain", "--config", str(path), "--set", "ds=2024-03-01", "--run-id", run_id)
        assert result.returncode == 0, result.stderr
    listed = run_cli("runs", str(tmp_path / "runs"), "--json")
    runs = json.loads(listed.stdout)
    assert [r["run_id"] for r in runs] == ["first", "second"] and len({r["uri"] for r in runs}) == 2
    assert all(Path(r["uri"]).parent.parent.name == "ds=2024-03-01" for r in runs)

    config["output"] = {"uri": str(tmp_path / "flat")}  # one folder for every run: the second is refused
    flat = write_config(tmp_path / "flat.yaml", config)
    assert (
        run_cli("explain", "--config", str(flat), "--set", "ds=2024-03-01", "--run-id", "a").returncode == 0
    )
    before = dataset_bytes(tmp_path / "flat" / "attributions")
    refused = run_cli("explain", "--config", str(flat), "--set", "ds=2024-03-01", "--run-id", "b")
    assert (
        refused.returncode == 2
        and "holds run 'a'" in refused.stderr
        and "output.run_folder" in refused.stderr
    )
    assert dataset_bytes(tmp_path / "flat" / "attributions") == before
