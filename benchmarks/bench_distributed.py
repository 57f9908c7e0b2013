"""Ray IG stage: throughput against the in-process engine, and driver memory vs input size.

1. rows/s of the in-process engine, and of the Ray path with 1 and 2 workers (embedded local
   Ray, started before timing; actor start-up and model loading are included), on the same
   rows of the Adult demo model at default IG settings; medians of --repeats.
2. Peak RSS of the driver process during the stage (sampled; a fresh subprocess each) and its
   rows/s, for --rss-sizes input rows (default 100,000, 1,000,000 and 3,000,000; n_steps=4,
   fixed steps, to keep the runs short), on Ray (2 workers) and in process, and of the
   validation stage (Great Expectations, streamed in batches of 200,000 rows), printed as a
   table with each peak against the smallest size's; it must not grow with the input.

Usage: python benchmarks/bench_distributed.py [--rows 16000] [--repeats 3] [--rss-sizes 100000,1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def make_rows(test_uri: str, n: int, path: Path) -> None:
    test = pd.read_parquet(test_uri)
    frame = test.iloc[np.arange(n) % len(test)].reset_index(drop=True)
    frame["row_id"] = np.arange(n, dtype=np.int64)
    frame.to_parquet(path, index=False, row_group_size=65_536)


def config_for(paths: dict, rows_uri: str, out: str, **overrides) -> dict:
    raw = yaml.safe_load(Path(paths["config"]).read_text())
    raw["data"]["input_uri"] = rows_uri
    raw["output"]["uri"] = out
    for section, values in overrides.items():
        raw.setdefault(section, {}).update(values)
    return raw


def driver_rss(config_path: str, runner: str) -> None:
    """Child mode: run the Ray IG stage and print the driver's RSS before it and its peak
    during it (sampled every 2 ms). Not ru_maxrss: Linux carries the high-water mark through
    fork+exec, so a child would report the parent's peak (here, the generated input)."""
    from _measure import peak_rss

    from ig_airflow.config import load_run_config
    from ig_airflow.run.local import run_explain
    from ig_airflow.run.ray_runner import run_explain_ray
    from ig_airflow.validation import run_validation

    config = load_run_config(config_path)
    stage = {"ray": run_explain_ray, "in-process": run_explain, "validation": run_validation}[runner]
    started = time.perf_counter()
    before, peak, _ = peak_rss(lambda: stage(config))
    print(
        json.dumps(
            {"before_mib": before / 2**20, "peak_mib": peak / 2**20, "seconds": time.perf_counter() - started}
        )
    )


def main() -> None:
    import ray

    from ig_airflow.config import parse_run_config
    from ig_airflow.demo.prepare import prepare_demo
    from ig_airflow.run.local import run_explain
    from ig_airflow.run.ray_runner import run_explain_ray

    os.environ.setdefault("IG_AIRFLOW_TRUSTED_MODULES", "ig_airflow.demo")  # the demo model's class
    with tempfile.TemporaryDirectory() as tmp:
        paths = prepare_demo(f"{tmp}/demo")
        if args.rss_only:
            rss_table(paths, tmp)
            return
        make_rows(paths["test"], args.rows, Path(tmp) / "rows.parquet")
        rows_uri = f"{tmp}/rows.parquet"
        ray.init(num_cpus=2, include_dashboard=False)
        timings: dict[str, list[float]] = {"in-process": [], "ray 1 worker": [], "ray 2 workers": []}
        for i in range(args.repeats):
            for name, workers in (("in-process", 0), ("ray 1 worker", 1), ("ray 2 workers", 2)):
                raw = config_for(
                    paths,
                    rows_uri,
                    f"{tmp}/out_{name[:3]}{workers}_{i}",
                    ray={"num_workers": max(workers, 1), "shard_rows": 4096},
                )
                config = parse_run_config(raw)
                start = time.perf_counter()
                run_explain(config) if workers == 0 else run_explain_ray(config)
                timings[name].append(time.perf_counter() - start)
        ray.shutdown()
        print(
            f"throughput: {args.rows} rows, Adult demo model, default IG settings, medians of {args.repeats}"
        )
        base = statistics.median(timings["in-process"])
        for name, values in timings.items():
            seconds = statistics.median(values)
            ratio = base / seconds
            print(
                f"  {name:14s} {args.rows / seconds:8.0f} rows/s  ({seconds:.2f} s, {ratio:.2f}x in-process)"
            )

        rss_table(paths, tmp)


def rss_table(paths: dict, tmp: str) -> None:
    """Peak driver RSS and rows/s per input size and runner (a fresh process each)."""
    sizes = [int(n) for n in args.rss_sizes.split(",") if n]
    print("driver RSS (fresh process each; IG: n_steps=4, fixed steps, Ray: 2 workers; validation: GX):")
    header = ("rows", "runner", "before MiB", "peak MiB", "growth", "vs first", "rows/s")
    print("  " + " ".join(f"{h:>{w}}" for h, w in zip(header, (10, 11, 11, 9, 7, 9, 8), strict=True)))
    first: dict[str, float] = {}
    for n in sizes:
        make_rows(paths["test"], n, Path(tmp) / f"rows{n}.parquet")
        for runner in args.rss_runners.split(","):
            raw = config_for(
                paths,
                f"{tmp}/rows{n}.parquet",
                f"{tmp}/rss{n}_{runner}",
                ig={"n_steps": 4, "tolerance": None, "batch_rows": 4096},
                ray={"num_workers": 2, "shard_rows": 32768},
            )
            (Path(tmp) / f"rss{n}.yaml").write_text(yaml.safe_dump(raw))
            child = subprocess.run(
                [sys.executable, __file__, "--driver-rss", f"{tmp}/rss{n}.yaml", "--runner", runner],
                capture_output=True,
                text=True,
                check=True,
            )
            result = json.loads(child.stdout.strip().splitlines()[-1])
            first.setdefault(runner, result["peak_mib"])
            print(
                f"  {n:>10,} {runner:>11} {result['before_mib']:>11.0f} {result['peak_mib']:>9.0f} "
                f"{result['peak_mib'] - result['before_mib']:>+7.0f} "
                f"{result['peak_mib'] / first[runner]:>8.2f}x {n / result['seconds']:>8.0f}"
            )
        (Path(tmp) / f"rows{n}.parquet").unlink()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=16_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rss-sizes", default="100000,1000000,3000000", help="input sizes of the RSS table")
    parser.add_argument("--rss-only", action="store_true", help="only the RSS table")
    parser.add_argument("--driver-rss", metavar="CONFIG")
    parser.add_argument("--runner", default="ray", choices=["ray", "in-process", "validation"])
    parser.add_argument("--rss-runners", default="ray,in-process,validation", help="stages of the RSS table")
    args = parser.parse_args()
    driver_rss(args.driver_rss, args.runner) if args.driver_rss else main()
