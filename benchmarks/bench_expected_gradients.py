"""Expected Gradients against single-baseline IG on the same rows, in the same process.

The Adult demo model (trained into a temporary directory, as ``ig-airflow demo prepare`` does,
unless ``--demo`` names a prepared one) explains ``--rows`` test rows with the default
``adaptive_trapezoid`` rule against: the median / most-frequent baseline row (IG), and
``baseline: {kind: distribution}`` with ``--samples`` k in both path modes (integral: k adaptive
path integrals per row; random_point: one random point per sample). For each: gradient
evaluations per row, wall time per row (median of ``--repeats`` interleaved rounds), the share
of rows converged, the mean Monte-Carlo standard error; then SE(k_min) / SE(k_max) (root mean
square over rows and features, and the median over features of each feature's) against
sqrt(k_max / k_min).

Usage: python benchmarks/bench_expected_gradients.py [--rows 200] [--samples 8,32,128] [--repeats 1]
       [--demo demo_output]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _measure import interleaved_medians

from ig_airflow.artifacts import LoadedArtifact, load_artifact
from ig_airflow.config import BaselineSection, IGSection
from ig_airflow.core.adaptive import RowAttributions, adaptive_attributions
from ig_airflow.core.baselines import resolve_baseline
from ig_airflow.core.encoding import encode_rows
from ig_airflow.core.expected import ExpectedGradients, read_pool


def explainers(
    artifact: LoadedArtifact, reference: str, numeric: np.ndarray, categorical: np.ndarray, samples: list[int]
) -> dict[str, Callable[[], RowAttributions]]:
    """One callable per scheme, each explaining the same rows."""
    meta, settings = artifact.metadata, IGSection()
    point = resolve_baseline(
        meta.inputs, BaselineSection(numeric="median", categorical="most_frequent"), reference
    )
    single = artifact.backend.attributor(artifact.model, meta, point, settings)
    schemes: dict[str, Callable[[], RowAttributions]] = {
        "IG, one baseline row": lambda: adaptive_attributions(single, numeric, categorical, settings)
    }
    for path in ("integral", "random_point"):
        for k in samples:
            pool = read_pool(
                meta.inputs, BaselineSection(kind="distribution", samples=k, path=path), reference
            )
            attributor = artifact.backend.attributor(artifact.model, meta, pool.point("bench"), settings)
            engine = ExpectedGradients(attributor, pool, settings)
            schemes[f"EG {path}, k={k}"] = lambda engine=engine: engine.explain(numeric, categorical)
    return schemes


def report(schemes: dict[str, Callable[[], RowAttributions]], repeats: int, rows: int) -> dict[str, Any]:
    """Print one line per scheme; returns the results."""
    seconds = interleaved_medians(schemes, repeats)
    results = {name: fn() for name, fn in schemes.items()}
    print(
        f"{'scheme':<28} {'evals/row':>10} {'ms/row':>8} {'x IG time':>10} {'converged':>10} {'mean SE':>9}"
    )
    for name, result in results.items():
        se = getattr(result, "standard_error", None)
        print(
            f"{name:<28} {result.gradient_evaluations / rows:>10.1f} {1000 * seconds[name] / rows:>8.2f} "
            f"{seconds[name] / seconds['IG, one baseline row']:>10.1f} {result.converged.mean():>10.2%} "
            f"{'' if se is None else f'{se.mean():.5f}':>9}"
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--samples", default="8,32,128")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--demo", help="a prepared demo folder (ig-airflow demo prepare); default: train one")
    args = parser.parse_args()
    samples = sorted(int(k) for k in args.samples.split(","))
    os.environ.setdefault("IG_AIRFLOW_TRUSTED_MODULES", "ig_airflow.demo")
    with tempfile.TemporaryDirectory() as tmp:
        if args.demo:
            demo = Path(args.demo)
            paths = {"train": demo / "data/adult_train.parquet", "test": demo / "data/adult_test.parquet"}
            paths["artifact"] = demo / "artifacts/adult_torch"
        else:
            from ig_airflow.demo.prepare import prepare_demo

            paths = prepare_demo(tmp)
        artifact = load_artifact(str(paths["artifact"]))
        rows = pd.read_parquet(paths["test"]).sample(args.rows, random_state=0)
        numeric, categorical = encode_rows(rows, artifact.metadata.inputs)
        schemes = explainers(artifact, str(paths["train"]), numeric, categorical, samples)
        results = report(schemes, args.repeats, args.rows)
    low, high = samples[0], samples[-1]
    for path in ("integral", "random_point"):
        se_low = results[f"EG {path}, k={low}"].standard_error
        se_high = results[f"EG {path}, k={high}"].standard_error
        ratio = np.sqrt(np.mean(se_low**2) / np.mean(se_high**2))
        by_feature = np.median(np.sqrt(np.mean(se_low**2, axis=0) / np.mean(se_high**2, axis=0)))
        print(
            f"{path}: SE(k={low}) / SE(k={high}) = {ratio:.3f} overall, {by_feature:.3f} median over features"
            f" (1/sqrt(k): {np.sqrt(high / low):.3f})"
        )


if __name__ == "__main__":
    main()
