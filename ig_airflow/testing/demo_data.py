"""The demo's data for the DAG tests: the Adult rows only, or fewer rows to explain where how
many rows a test explains does not matter for what it shows."""

from __future__ import annotations

from pathlib import Path

from ig_airflow.demo.adult import load_adult
from ig_airflow.demo.prepare import write_frame


def write_demo_data(demo_dir: str | Path, test_rows: int | None = None) -> dict[str, str]:
    """``data/adult_train.parquet`` (every training row) and ``data/adult_test.parquet`` (the
    first ``test_rows`` test rows, all if None) under ``demo_dir``, as ``prepare_demo`` writes
    them, but no model trained and no partitions: for a DAG that trains its own models (the
    compare DAG's registry). Returns the two paths."""
    data = Path(demo_dir) / "data"
    data.mkdir(parents=True, exist_ok=True)
    paths = {"train": data / "adult_train.parquet", "test": data / "adult_test.parquet"}
    write_frame(load_adult("train"), paths["train"])
    test = load_adult("test")
    write_frame(test if test_rows is None else test.head(test_rows).reset_index(drop=True), paths["test"])
    return {name: str(path) for name, path in paths.items()}


def keep_test_rows(demo_dir: str | Path, test_rows: int) -> int:
    """Cut the demo's ``data/adult_test.parquet`` (the explain DAG's input) to its first
    ``test_rows`` rows; returns how many it keeps."""
    import pandas as pd

    path = Path(demo_dir) / "data" / "adult_test.parquet"
    kept = pd.read_parquet(path).head(test_rows).reset_index(drop=True)
    write_frame(kept, path)
    return len(kept)


def copy_demo(prepared: dict[str, str], demo_dir: str | Path) -> None:
    """What ``ig_adult_retrain`` publishes under ``demo_dir`` (the data, the daily partitions and
    the trained artifact, seed 0), copied from a demo ``prepare_demo`` already wrote (``prepared``:
    its paths) instead of trained again."""
    import shutil

    source, target = Path(prepared["train"]).parents[1], Path(demo_dir)
    for folder in ("data", "partitions", "artifacts/adult_torch"):
        shutil.copytree(source / folder, target / folder, dirs_exist_ok=True)
