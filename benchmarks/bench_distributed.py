"""Ray IG stage: throughput against the in-process engine, and driver memory vs input size.

1. rows/s of the in-process engine, and of the Ray path with 1 and 2 workers (embedded local
   Ray, started before timing; actor start-up and model loading are included), on the same
   rows of the Adult demo model at default IG settings; medians of --repeats.
2. RSS of the driver process during the stage (sampled; a fresh subprocess each) for
   100,000 and 1,000,000 input rows (n_steps=4, fixed steps, to keep the run short); it must
   not grow with the input.

Usage: python benchmarks/bench_distributed.py [--rows 16000] [--repeats 3]
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


def driver_rss(config_path: str) -> None:
    """Child mode: run the Ray IG stage and print the driver's RSS before it and its peak
    during it (sampled every 2 ms). Not ru_maxrss: Linux carries the high-water mark through
    fork+exec, so a child would report the parent's peak (here, the generated input)."""
    from _measure import peak_rss

    from ig_airflow.config import load_run_config
    from ig_airflow.run.ray_runner import run_explain_ray

    config = load_run_config(config_path)
    before, peak, manifest = peak_rss(lambda: run_explain_ray(config))
    print(
        json.dumps(
            {
                "before_mib": before / 2**20,
                "peak_mib": peak / 2**20,
                "rows": manifest["rows"]["explained"],
                "seconds": manifest["timing"]["seconds"],
            }
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

        print("driver RSS (fresh process each; n_steps=4, fixed steps, 2 workers):")
        for n in (100_000, 1_000_000):
            make_rows(paths["test"], n, Path(tmp) / f"rows{n}.parquet")
            raw = config_for(
                paths,
                f"{tmp}/rows{n}.parquet",
                f"{tmp}/rss{n}",
                ig={"n_steps": 4, "tolerance": None},
                ray={"num_workers": 2, "shard_rows": 32768},
            )
            raw["ig"]["batch_rows"] = 4096
            (Path(tmp) / f"rss{n}.yaml").write_text(yaml.safe_dump(raw))
            child = subprocess.run(
                [sys.executable, __file__, "--driver-rss", f"{tmp}/rss{n}.yaml"],
                capture_output=True,
                text=True,
                check=True,
            )
            result = json.loads(child.stdout.strip().splitlines()[-1])
            growth = result["peak_mib"] - result["before_mib"]
            print(
                f"  {n:>9,} rows: driver RSS {result['before_mib']:.0f} MiB before the stage, peak "
                f"{result['peak_mib']:.0f} MiB during it (+{growth:.0f} MiB); {result['seconds']:.1f} s"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=16_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--driver-rss", metavar="CONFIG")
    args = parser.parse_args()
    driver_rss(args.driver_rss) if args.driver_rss else main()
