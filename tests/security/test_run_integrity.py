"""Runs that must never mix or lose rows: a shard edited or truncated between runs is recomputed,
never merged; a second writer of the same run folder is refused while the first holds it;
concurrent history appends keep every record."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from ig_airflow.analysis.drift import append_history
from ig_airflow.config import parse_run_config
from ig_airflow.layout import RunLayout
from ig_airflow.lease import RunFolderBusy, run_lease
from ig_airflow.run.local import run_explain
from ig_airflow.run.ray_runner import ShardFailed, run_explain_ray


@pytest.fixture(scope="module", autouse=True)
def embedded_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def config_for(demo, tmp: Path, out: Path, rows: int = 600, **ray):
    rows_uri = tmp / "rows.parquet"
    if not rows_uri.exists():
        pd.read_parquet(demo["test"]).head(rows).to_parquet(rows_uri, index=False)
    raw = yaml.safe_load(Path(demo["config"]).read_text())
    raw["data"]["input_uri"] = str(rows_uri)
    raw["output"]["uri"] = str(out)
    raw["ig"].update({"batch_rows": 100})
    raw["ray"] = {"num_workers": 2, "shard_rows": 200, **ray}
    return parse_run_config(raw)


@pytest.mark.parametrize("damage", ["edited", "truncated"])
def test_damaged_shard_is_recomputed_not_merged(demo, tmp_path: Path, damage: str, caplog) -> None:
    config = config_for(demo, tmp_path, tmp_path / "out")
    run_explain_ray(config)
    expected = pd.read_parquet(tmp_path / "out" / "attributions")
    shard = Path(RunLayout(str(tmp_path / "out")).attribution_part(1))  # in the committed dataset
    if damage == "edited":  # 100 of its 200 rows, still valid Parquet
        pq.write_table(pq.read_table(shard).slice(0, 100), shard)
    else:
        shard.write_bytes(shard.read_bytes()[:-500])
    manifest = run_explain_ray(config)
    assert manifest["shards"] == {"total": 3, "skipped": 2, "computed": 1}
    assert "shard 1 (rows 200-400)" in caplog.text and "recomputing it" in caplog.text
    again = pd.read_parquet(tmp_path / "out" / "attributions")
    assert len(again) == manifest["rows"]["explained"] == 600
    pd.testing.assert_frame_equal(again, expected)


def test_shard_changed_after_it_was_written_fails_the_merge(demo, tmp_path: Path, monkeypatch) -> None:
    """Between a worker's write and the driver's merge, nothing may change a shard."""
    import ig_airflow.run.ray_runner as runner

    original = runner.ShardPool.run

    def run_then_tamper(self, todo, done, total, on_shard):
        original(self, todo, done, total, on_shard)
        shard = Path(RunLayout(str(tmp_path / "out")).shard_rows(0))
        pq.write_table(pq.read_table(shard).slice(0, 10), shard)

    monkeypatch.setattr(runner.ShardPool, "run", run_then_tamper)
    with pytest.raises(ShardFailed, match=r"shard 0 \(rows 0-200\): .* changed after it was written"):
        run_explain_ray(config_for(demo, tmp_path, tmp_path / "out"))
    assert not (tmp_path / "out" / "attributions").exists()


def hold_lease(lease_file: Path, pid: int, host: str, seconds: float) -> None:
    lease_file.parent.mkdir(parents=True, exist_ok=True)
    holder = f"{host}:{pid}:other"
    lease_file.write_text(
        json.dumps({"holder": holder, "host": host, "pid": pid, "expires_at": time.time() + seconds})
    )


def test_second_writer_of_a_run_folder_is_refused_until_the_holder_is_gone(demo, tmp_path: Path) -> None:
    out = tmp_path / "out"
    config = config_for(demo, tmp_path, out, rows=200).model_copy(
        update={"ray": config_for(demo, tmp_path, out).ray.model_copy(update={"enabled": False})}
    )
    other = subprocess.Popen(["sleep", "60"])  # a live process on this host holds the folder
    try:
        hold_lease(Path(RunLayout(str(out)).lease), other.pid, socket.gethostname(), 600)
        with pytest.raises(RunFolderBusy, match=rf"{out} is being written by .*:{other.pid}:other"):
            run_explain(config)
        assert not (out / "attributions").exists()  # nothing written beside the holder
    finally:
        other.kill()
        other.wait()
    manifest = run_explain(config)  # the holder died: its lease is taken over at once
    assert manifest["rows"]["explained"] == 200
    assert json.loads(Path(RunLayout(str(out)).lease).read_text())["holder"] is None  # released at the end


def test_lease_of_another_host_is_respected_until_it_expires(tmp_path: Path) -> None:
    layout = RunLayout(str(tmp_path / "run"))
    hold_lease(Path(layout.lease), 1, "another-host", 600)
    with pytest.raises(RunFolderBusy, match="another-host:1:other"), run_lease(layout):
        pass
    hold_lease(Path(layout.lease), 1, "another-host", -1)  # expired
    with run_lease(layout):
        assert json.loads(Path(layout.lease).read_text())["pid"] == os.getpid()


def _append(args: tuple[str, int]) -> None:
    uri, index = args
    summary = pd.DataFrame(
        {"feature": ["a", "b"], "mean_abs_attribution": [0.2, 0.1], "mean_attribution": [0.1, 0.0]}
    ).assign(share=[2 / 3, 1 / 3], rank=[1, 2])
    append_history(uri, f"run-{index:03d}", summary, {"attributions_uri": f"/runs/{index}"})


def test_concurrent_history_appends_lose_no_record(tmp_path: Path) -> None:
    uri = str(tmp_path / "history.parquet")
    with multiprocessing.get_context("spawn").Pool(6) as pool:
        pool.map(_append, [(uri, i) for i in range(60)])
    history = pd.read_parquet(uri)
    assert sorted(history["run_key"].unique()) == [f"run-{i:03d}" for i in range(60)]
    assert len(history) == 120
