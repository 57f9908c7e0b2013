"""Validation throughput: 1,000,000 rows x 30 columns (20 numeric, 10 categorical with
vocabularies of 50) with 0.1% faulty rows, through the whole stage (Parquet in, GX suite,
quarantine, Parquet out). Prints the stage's median time beside reading the same Parquet
file into pandas (the reference measured in the same run).

Usage: python benchmarks/bench_validation.py [--rows 1000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ig_airflow.config import ValidationSection
from ig_airflow.spec import InputSpec
from ig_airflow.validation import validate_inputs


def make_data(rows: int, path: Path) -> InputSpec:
    rng = np.random.default_rng(0)
    vocab = [f"v{i}" for i in range(50)]
    frame = pd.DataFrame({"row_id": np.arange(rows, dtype=np.int64)})
    for i in range(20):
        frame[f"x{i}"] = rng.normal(size=rows)
    for i in range(10):
        frame[f"c{i}"] = np.array(vocab, dtype=object)[rng.integers(0, 50, size=rows)]
    bad = rng.choice(rows, size=rows // 1000, replace=False)
    frame.loc[bad[: len(bad) // 2], "c3"] = "unseen"
    frame.loc[bad[len(bad) // 2 :], "x7"] = np.nan
    frame.to_parquet(path, index=False)
    return InputSpec(
        numeric=[{"name": f"x{i}"} for i in range(20)],
        categorical=[{"name": f"c{i}", "vocabulary": vocab, "embedding_layer": f"e{i}"} for i in range(10)],
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "input.parquet"
        spec = make_data(args.rows, path)
        stage, reads = [], []
        for i in range(args.repeats):
            start = time.perf_counter()
            pd.read_parquet(path)
            reads.append(time.perf_counter() - start)
            start = time.perf_counter()
            report = validate_inputs(
                str(path), spec, ["row_id"], ValidationSection(data_docs=False), f"{tmp}/out{i}"
            )
            stage.append(time.perf_counter() - start)
    rows = report["rows"]
    print(f"rows={args.rows} columns=30 repeats={args.repeats} (medians)")
    seconds = statistics.median(stage)
    print(f"  validation stage: {seconds:.2f} s ({args.rows / seconds:,.0f} rows/s)")
    print(f"  parquet read:     {statistics.median(reads):.2f} s")
    print(f"  stage / read = {statistics.median(stage) / statistics.median(reads):.1f}x")
    print(f"  input {rows['input']} = validated {rows['validated']} + quarantined {rows['quarantined']}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    main()
