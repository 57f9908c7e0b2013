"""Hostile or broken inputs get a clear error early and lose nothing: YAML expansion bombs and
oversized configs, integer ids with nulls (never cast to float), duplicate column names, text
that is not UTF-8, and a disk that fills up while an output is written."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from ig_airflow.config import MAX_CONFIG_BYTES, MAX_YAML_ALIASES, parse_run_config
from ig_airflow.exceptions import InputDataError
from ig_airflow.io import read_parquet
from ig_airflow.pipeline import run_pipeline


def run_cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ig_airflow.cli", *args], capture_output=True, text=True, timeout=300, **kwargs
    )


def test_yaml_alias_bomb_is_refused_in_a_second(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    lines.append("model: {uri: *a8}")  # 10**9 strings once expanded, inside a schema-valid key
    config = tmp_path / "bomb.yaml"
    config.write_text("\n".join(lines) + "\n")
    started = time.perf_counter()
    result = run_cli("explain", "--config", str(config))
    assert time.perf_counter() - started < 30  # CLI start-up included; the check itself is instant
    assert result.returncode == 2
    assert f"more than {MAX_YAML_ALIASES} YAML aliases" in result.stderr and str(config) in result.stderr


def test_oversized_config_is_refused_before_parsing(tmp_path: Path) -> None:
    config = tmp_path / "huge.yaml"
    config.write_text("# padding\n" * (MAX_CONFIG_BYTES // 10 + 1))
    result = run_cli("validate", "--config", str(config))
    assert result.returncode == 2 and f"a run config may hold at most {MAX_CONFIG_BYTES}" in result.stderr


def test_integer_ids_with_a_null_stay_exact(demo, tmp_path: Path) -> None:
    rows = pd.read_parquet(demo["test"]).head(20).drop(columns=["row_id"])
    ids = [2**53 + 2 * i + 1 for i in range(20)]  # not representable as float64
    table = pa.Table.from_pandas(rows, preserve_index=False).add_column(
        0, "row_id", pa.array([None if i == 3 else v for i, v in enumerate(ids)], pa.int64())
    )
    pq.write_table(table, tmp_path / "rows.parquet")
    raw = yaml.safe_load(Path(demo["config"]).read_text())
    raw["data"]["input_uri"] = str(tmp_path / "rows.parquet")
    raw["output"]["uri"] = str(tmp_path / "run")
    raw["ray"] = {"enabled": False}
    manifest = run_pipeline(parse_run_config(raw))
    assert manifest["validation"]["rows"] == {
        "input": 20,
        "validated": 19,
        "quarantined": 1,
        "mapped_to_default": 0,
    }
    explained = pq.read_table(tmp_path / "run" / "attributions")
    assert explained.schema.field("row_id").type == pa.int64()
    assert explained.column("row_id").to_pylist() == [v for i, v in enumerate(ids) if i != 3]
    quarantine = pq.read_table(tmp_path / "run" / "validation" / "quarantine")
    assert quarantine.column("row_id").to_pylist() == [None]
    assert quarantine.column("_quarantine_reason").to_pylist() == [
        "expect_column_values_to_not_be_null(row_id)"
    ]


def test_duplicate_column_names_are_named(tmp_path: Path) -> None:
    table = pa.table({"a": [1, 2], "b": [3, 4]}).rename_columns(["age", "age"])
    pq.write_table(table, tmp_path / "dup.parquet")
    with pytest.raises(InputDataError, match=r"dup.parquet: duplicate column names \['age'\]"):
        read_parquet(str(tmp_path / "dup.parquet"))


def test_text_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    data = pa.py_buffer(b"Male\xff\xfe")
    offsets = pa.py_buffer(pa.array([0, 4, 6], pa.int32()).buffers()[1])
    sex = pa.Array.from_buffers(pa.string(), 2, [None, offsets, data])
    pq.write_table(pa.table({"sex": sex, "age": [30.0, 40.0]}), tmp_path / "bad.parquet")
    with pytest.raises(
        InputDataError, match=r"bad.parquet: column 'sex' holds values that are not valid UTF-8"
    ):
        read_parquet(str(tmp_path / "bad.parquet"))


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))


def test_write_failure_exits_2_and_leaves_no_temporary_file(demo, tmp_path: Path) -> None:
    raw = yaml.safe_load(Path(demo["config"]).read_text())
    raw["output"]["uri"] = str(tmp_path / "run")
    raw["ray"] = {"enabled": False}
    raw["ig"] = {"n_steps": 4, "tolerance": None}
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(raw))
    result = run_cli("explain", "--config", str(config), preexec_fn=_limit_file_size)
    assert result.returncode == 2, result.stderr[-2000:]
    shard = tmp_path / "run" / "shards" / "part-00000.parquet"  # the first shard, written by the runner
    assert f"cannot write {shard}: File too large" in result.stderr
    assert "Traceback" not in result.stderr
    leftovers = [p.name for p in (tmp_path / "run").rglob("*") if ".tmp-" in p.name]
    assert leftovers == [] and not (tmp_path / "run" / "attributions").exists()
