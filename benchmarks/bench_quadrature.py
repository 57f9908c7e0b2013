"""Gradient evaluations per row against accuracy, for every quadrature scheme, on the same rows.

The Adult demo model (trained offline into a temporary directory, as ``ig-airflow demo
prepare`` does) explains ``--rows`` test rows (the same rows for every scheme) with:
  - fixed-step Gauss-Legendre at several step counts (no tolerance);
  - today's adaptive default before issue 18: Gauss-Legendre from 32 steps, doubled up to 512
    for rows above a 1% tolerance, atol 1e-6;
  - ``adaptive_trapezoid`` (the default now): nested per-row refinement from 9 points, and
    with other first passes and atol.
For each: gradient evaluations per row, the share of rows within 1% relative completeness
(``|delta| <= 0.01 |change|``), within ``atol + rtol`` (atol 1e-4 of a probability, the new
default), the share whose every feature is within 1% of ``|change|`` of a float64
Gauss-Legendre reference at ``--reference-steps``, the 99th percentile of that feature error,
and the median wall time of ``--repeats`` runs. The same is repeated on held-out models
(``--heldout``: a torch model trained with another seed, and the Keras twin when TensorFlow is
installed). Last, the former and the new default on ``bench_ig_engine.py``'s larger net, where
a gradient costs more than a refinement round's overhead: evaluations per row and median time.

Usage: python benchmarks/bench_quadrature.py [--rows 4000] [--repeats 3] [--heldout torch_seed1,keras]
       [--engine-net-rows 1024]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _measure import interleaved_medians

from ig_airflow.artifacts import load_artifact
from ig_airflow.config import IGSection
from ig_airflow.core.adaptive import RowAttributions, adaptive_attributions
from ig_airflow.core.baselines import resolve_baseline
from ig_airflow.core.encoding import encode_rows

RTOL, ATOL = 0.01, 1e-4
TODAY = {"method": "gausslegendre", "n_steps": 32, "max_steps": 512, "tolerance": RTOL, "atol": 1e-6}
SCHEMES: dict[str, dict[str, Any]] = {
    **{
        f"gausslegendre fixed {n}": {
            "method": "gausslegendre",
            "n_steps": n,
            "max_steps": n,
            "tolerance": None,
        }
        for n in (16, 32, 64, 128, 256, 512)
    },
    "before: gausslegendre doubling 32..512, atol 1e-6": TODAY,
    "gausslegendre doubling 32..512, atol 1e-4": {**TODAY, "atol": ATOL},
    "adaptive_trapezoid (default: 9 points first)": {},
    "adaptive_trapezoid, atol 1e-6": {"atol": 1e-6},
    "adaptive_trapezoid, 17 points first": {"n_steps": 17},
    "adaptive_trapezoid, 32 points first": {"n_steps": 32},
}
HELD_OUT_SCHEMES = [
    "gausslegendre fixed 32",
    "gausslegendre fixed 64",
    "before: gausslegendre doubling 32..512, atol 1e-6",
    "adaptive_trapezoid (default: 9 points first)",
    "adaptive_trapezoid, 17 points first",
]


@dataclass
class Case:
    """One model and the encoded rows it explains, with its baseline and reference attributions."""

    name: str
    artifact: Any
    baseline: Any
    numeric: np.ndarray
    categorical: np.ndarray
    reference: np.ndarray | None = None

    def explain(self, settings: IGSection) -> RowAttributions:
        attributor = self.artifact.backend.attributor(
            self.artifact.model, self.artifact.metadata, self.baseline, settings
        )
        return adaptive_attributions(attributor, self.numeric, self.categorical, settings)


def prepare(out: Path, heldout: list[str], rows: int) -> list[Case]:
    """Train the demo model(s) into ``out`` and encode the same ``rows`` test rows for each."""
    from ig_airflow.demo.adult import load_adult
    from ig_airflow.demo.prepare import prepare_demo, train_demo_keras, train_demo_torch

    paths = prepare_demo(out)
    artifacts = {"adult torch (seed 0)": paths["artifact"]}
    if "torch_seed1" in heldout:
        train_demo_torch(load_adult("train"), out / "artifacts" / "torch_seed1", seed=1)
        artifacts["held out: adult torch (seed 1)"] = str(out / "artifacts" / "torch_seed1")
    if "keras" in heldout:
        try:
            train_demo_keras(load_adult("train"), out / "artifacts" / "keras")
            artifacts["held out: adult keras"] = str(out / "artifacts" / "keras")
        except ImportError as error:
            print(f"(no Keras held-out model: {error})")
    test = pd.read_parquet(paths["test"]).sample(rows, random_state=0)
    cases = []
    for name, uri in artifacts.items():
        artifact = load_artifact(uri)
        baseline = resolve_baseline(artifact.metadata.inputs, artifact.metadata.baseline, paths["train"])
        numeric, categorical = encode_rows(test, artifact.metadata.inputs)
        cases.append(Case(name, artifact, baseline, numeric, categorical))
    return cases


def measure(case: Case, schemes: list[str], repeats: int) -> None:
    """Print one line per scheme: evaluations per row, shares within tolerance, feature errors, time."""
    results = {name: case.explain(IGSection(**SCHEMES[name])) for name in schemes}
    timings = interleaved_medians(
        {name: lambda name=name: case.explain(IGSection(**SCHEMES[name])) for name in schemes}, repeats
    )
    print(f"\n{case.name}: {len(case.numeric)} rows, float32, 1 target")
    header = (
        "evals/row | within 1% rel | within atol+rtol | converged | barely moved | features 1% | p99 feature"
    )
    print(f"{'scheme':52s} | {header} | median s")
    for name in schemes:
        result = results[name]
        change = result.prediction - result.baseline_prediction
        error = np.abs(result.delta)
        features = np.abs(result.attributions - case.reference).max(axis=1) / np.abs(change)
        barely = 0 if result.barely_moved is None else int(result.barely_moved.sum())
        print(
            f"{name:52s} | {result.gradient_evaluations / len(change):9.1f} | "
            f"{np.mean(error <= RTOL * np.abs(change)):13.2%} | "
            f"{np.mean(error <= RTOL * np.abs(change) + ATOL):16.2%} | {result.converged.mean():9.2%} | "
            f"{barely:12d} | {np.mean(features <= RTOL):11.2%} | {np.quantile(features, 0.99):11.4f} | "
            f"{timings[name]:.3f}"
        )


def engine_net(rows: int, repeats: int) -> None:
    """The former and the new default on ``bench_ig_engine.py``'s net (3x256 ReLU MLP, six 1000x16
    embeddings, random weights), where a gradient costs more than a round's overhead."""
    from bench_ig_engine import build

    from ig_airflow.backends.torch.attribution import torch_attributor

    wrapper, baseline, numeric, categorical, _ = build(rows)
    schemes = {"former default": IGSection(**TODAY), "adaptive_trapezoid (default)": IGSection()}

    def run(settings: IGSection) -> RowAttributions:
        attributor = torch_attributor(wrapper, baseline, settings)
        return adaptive_attributions(attributor, numeric, categorical, settings)

    timings = interleaved_medians({name: lambda s=s: run(s) for name, s in schemes.items()}, repeats)
    print(f"\nbench_ig_engine.py net: {rows} rows, float32, medians of {repeats}")
    for name, settings in schemes.items():
        result = run(settings)
        change = np.abs(result.prediction - result.baseline_prediction)
        within = np.mean(np.abs(result.delta) <= RTOL * change)
        print(
            f"{name:30s} {result.gradient_evaluations / rows:7.1f} evals/row, {within:.2%} within 1%, "
            f"{result.converged.mean():.2%} converged, {timings[name]:.2f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per scheme (median)")
    parser.add_argument("--reference-steps", type=int, default=2048)
    parser.add_argument("--heldout", default="torch_seed1,keras", help="comma-separated: torch_seed1, keras")
    parser.add_argument("--engine-net-rows", type=int, default=1024, help="0: skip the bench_ig_engine net")
    args = parser.parse_args()
    os.environ.setdefault("IG_AIRFLOW_TRUSTED_MODULES", "ig_airflow.demo")  # the demo models' code
    with tempfile.TemporaryDirectory() as tmp:
        cases = prepare(Path(tmp), [h for h in args.heldout.split(",") if h], args.rows)
        for i, case in enumerate(cases):
            exact = IGSection(
                method="gausslegendre",
                n_steps=args.reference_steps,
                max_steps=args.reference_steps,
                tolerance=None,
                dtype="float64",
            )
            case.reference = case.explain(exact).attributions
            measure(case, list(SCHEMES) if i == 0 else HELD_OUT_SCHEMES, args.repeats)
    if args.engine_net_rows:
        engine_net(args.engine_net_rows, min(args.repeats, 3))


if __name__ == "__main__":
    main()
