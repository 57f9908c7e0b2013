"""Global summaries and drift over 1,000,000 rows x 30 features, streamed one column chunk at
a time. Prints median times (rounds interleaved) of the feature summary without and with its
bootstrap intervals (200 Poisson resamples on row blocks, from per-block sums kept in the same
pass) and their ratio, of a drift comparison of two such runs (every metric with its bootstrap
interval and resampling null), beside reading the whole file into pandas (the reference, same
run), and the peak RSS growth of the summary with intervals against the file's in-memory size.

Usage: python benchmarks/bench_summaries.py [--rows 1000000] [--repeats 3] [--resamples 200]
"""

from __future__ import annotations

import argparse
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from _measure import interleaved_medians, median_time, peak_rss

from ig_airflow.analysis.aggregation import feature_summary
from ig_airflow.analysis.drift import compare_runs
from ig_airflow.config import DriftSection
from ig_airflow.io import write_parquet


def make_run(path: Path, rows: int, seed: int) -> int:
    rng = np.random.default_rng(seed)
    columns = {"row_id": np.arange(rows, dtype=np.int64)}
    for i in range(30):
        columns[f"attr__f{i:02d}"] = rng.normal(scale=1 + i / 10, size=rows)
    columns["prediction"] = rng.random(rows)
    table = pa.table(columns)
    write_parquet(str(path), table)
    return table.nbytes


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        a, b = Path(tmp) / "a.parquet", Path(tmp) / "b.parquet"
        with ProcessPoolExecutor(1) as pool:  # the tables never live in this process
            nbytes = pool.submit(make_run, a, args.rows, 0).result()
            pool.submit(make_run, b, args.rows, 1).result()
        before, peak, _ = peak_rss(lambda: feature_summary(str(a), resamples=args.resamples))
        times = interleaved_medians(
            {
                "summary": lambda: feature_summary(str(a)),
                "bootstrap": lambda: feature_summary(str(a), resamples=args.resamples),
                "read": lambda: pd.read_parquet(a),
            },
            args.repeats,
        )
        settings = DriftSection(resamples=args.resamples)
        drift_s = median_time(lambda: compare_runs(str(a), str(b), settings), args.repeats)
    summary_s, boot_s, read_s = times["summary"], times["bootstrap"], times["read"]
    print(f"rows={args.rows} features=30 resamples={args.resamples} repeats={args.repeats} (medians)")
    print(f"  feature summary:                 {summary_s:.2f} s")
    ratio = boot_s / summary_s
    print(f"  with {args.resamples} bootstrap resamples:    {boot_s:.2f} s   ({ratio:.2f}x the summary)")
    print(f"  drift (two runs, with statistics): {drift_s:.2f} s")
    print(f"  pandas full read:                {read_s:.2f} s   (summary / read = {summary_s / read_s:.1f}x)")
    growth = (peak - before) / 2**20
    print(
        f"  summary with intervals: peak RSS growth {growth:.0f} MiB; "
        f"the whole table in memory: {nbytes / 2**20:.0f} MiB"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--resamples", type=int, default=200)
    args = parser.parse_args()
    main()
