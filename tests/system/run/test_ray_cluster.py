"""IG against a real multi-process Ray cluster started with ``ray start --head``, reached
through ``RAY_ADDRESS`` by the ig-airflow CLI (a separate driver process)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head():
    import ray

    ray.shutdown()  # no embedded Ray in this process
    ray_cli = shutil.which("ray", path=os.path.dirname(sys.executable))
    port = free_port()
    # loopback-only test cluster: no token auth (real clusters use RAY_AUTH_MODE=token)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    started = subprocess.run(
        [
            ray_cli,
            "start",
            "--head",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert started.returncode == 0, started.stderr
    yield f"127.0.0.1:{port}"
    subprocess.run([ray_cli, "stop", "--force"], capture_output=True, timeout=120, env=env)


def test_cli_on_a_real_ray_cluster_via_ray_address(ray_head: str, demo, tmp_path: Path) -> None:
    pd.read_parquet(demo["test"]).head(900).to_parquet(tmp_path / "rows.parquet", index=False)
    config = yaml.safe_load(Path(demo["config"]).read_text())
    config["data"]["input_uri"] = str(tmp_path / "rows.parquet")
    config["output"]["uri"] = str(tmp_path / "out")
    config["ray"] = {"num_workers": 2, "shard_rows": 300}
    config["ig"]["batch_rows"] = 300
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "RAY_ADDRESS": ray_head, "RAY_AUTH_MODE": "disabled"}
    result = subprocess.run(
        [sys.executable, "-m", "ig_airflow.cli", "explain", "--config", str(tmp_path / "run.yaml")],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"connecting to the Ray cluster at {ray_head}" in result.stderr
    assert "starting an embedded local Ray" not in result.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["runner"] == "ray" and manifest["shards"]["computed"] == 3
    out = pd.read_parquet(tmp_path / "out" / "attributions")
    assert sorted(out.row_id) == sorted(pd.read_parquet(tmp_path / "rows.parquet").row_id)
    assert out["completeness_error"].mean() <= 0.01
