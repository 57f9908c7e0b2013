"""IG engine throughput against plain Captum and the forward+backward floor, in one run.

Model (as in issue 8): 20 numeric inputs, 6 embeddings (vocab 1000, dim 16), 3x256 ReLU MLP,
sigmoid output. Prints medians over --repeats rounds (each round times every variant once) of:
  - ours:   the vectorised engine at a fixed step count (no adaptivity), rows/s
  - captum: plain captum LayerIntegratedGradients (default internal batch), rows/s
  - floor:  one input-gradient forward+backward over rows x steps interpolated rows
            (the faster of chunks of --floor-chunk rows and of the engine's own chunk size),
            expressed as rows/s
and their ratios; the engine's peak RSS growth against its memory budget; and, for the
adaptive mode at a 1% tolerance, gradient evaluations against the smallest fixed step count
that reaches the same share of rows within tolerance.

Usage: python benchmarks/bench_ig_engine.py [--rows 2048] [--steps 50] [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from _measure import interleaved_medians, peak_rss
from captum.attr import LayerIntegratedGradients

from ig_airflow.backends.torch.attribution import torch_attributor
from ig_airflow.backends.torch.wrapper import TorchModelWrapper
from ig_airflow.config import IGSection
from ig_airflow.core.adaptive import adaptive_attributions as explain_rows
from ig_airflow.core.baselines import Baseline
from ig_airflow.demo.torch_model import TabularNet
from ig_airflow.spec import ArtifactMetadata

N_NUM, N_CAT, VOCAB, DIM = 20, 6, 1000, 16


def build(
    rows: int, seed: int = 0, n_outputs: int = 1, output: dict | None = None
) -> tuple[TorchModelWrapper, Baseline, np.ndarray, np.ndarray, ArtifactMetadata]:
    """The benchmark net (``n_outputs`` logits, explained as ``output`` says) and ``rows`` rows."""
    torch.manual_seed(seed)
    names = [f"c{i}" for i in range(N_CAT)]
    hidden = [256, 256, 256]
    model = TabularNet(
        N_NUM, names, [VOCAB + 1] * N_CAT, embedding_dim=DIM, hidden=hidden, n_outputs=n_outputs
    )
    meta = ArtifactMetadata(
        framework="pytorch",
        loader="pickle",
        model_file="-",
        inputs={
            "numeric": [{"name": f"x{i}"} for i in range(N_NUM)],
            "categorical": [
                {
                    "name": n,
                    "vocabulary": [str(v) for v in range(VOCAB)],
                    "embedding_layer": f"embeddings.{n}",
                }
                for n in names
            ],
        },
        output=output or {},
    )
    rng = np.random.default_rng(seed)
    return (
        TorchModelWrapper(model.eval(), meta),
        Baseline(np.zeros(N_NUM), np.zeros(N_CAT, np.int64)),
        rng.normal(size=(rows, N_NUM)),
        rng.integers(1, VOCAB + 1, size=(rows, N_CAT)),
        meta,
    )


def live_tensor_peak() -> float:
    """Peak RSS growth of one engine run in a child process whose glibc returns every large
    free to the OS at once (fixed mmap threshold), so RSS follows the live tensors (MiB)."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    command = [sys.executable, __file__, "--live-probe", "--rows", str(args.rows), "--steps", str(args.steps)]
    command += ["--budget-mb", str(args.budget_mb), "--threads", str(torch.get_num_threads())]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def main() -> None:
    torch.set_num_threads(args.threads or torch.get_num_threads())
    wrapper, baseline, numeric, categorical, meta = build(args.rows)
    settings = IGSection(
        method="gausslegendre", n_steps=args.steps, tolerance=None, memory_budget_mb=args.budget_mb
    )
    ours = torch_attributor(wrapper, baseline, settings)

    def run_ours() -> None:
        ours.attribute(numeric, categorical, args.steps)

    if args.live_probe:
        before, peak, _ = peak_rss(run_ours)
        print((peak - before) / 2**20)
        return

    model = wrapper.model
    layers = [model.numeric_input] + [model.get_submodule(f.embedding_layer) for f in meta.inputs.categorical]
    lig = LayerIntegratedGradients(wrapper, layers)
    x_num, x_cat = wrapper.tensors(numeric, categorical)
    b_num, b_cat = torch.zeros_like(x_num), torch.zeros_like(x_cat)

    def run_captum() -> None:
        lig.attribute((x_num, x_cat), baselines=(b_num, b_cat), n_steps=args.steps)

    interpolated = args.rows * args.steps
    floor_num = x_num.repeat(args.steps, 1)
    floor_cat = x_cat.repeat(args.steps, 1)

    def floor_in_chunks(size: int) -> Callable[[], None]:
        def run_floor() -> None:
            for start in range(0, interpolated, size):
                chunk = floor_num[start : start + size].clone().requires_grad_(True)
                out = wrapper(chunk, floor_cat[start : start + size])
                torch.autograd.grad(out.sum(), chunk)

        return run_floor

    before, peak, _ = peak_rss(run_ours)  # first run in the process: allocator pools still empty
    growth = peak - before
    # the floor at the faster of the chunk size and the engine's own
    floor_chunks = sorted({args.floor_chunk, ours.internal_batch_size})
    timed = interleaved_medians(
        {"ours": run_ours, "captum": run_captum} | {f"floor {n}": floor_in_chunks(n) for n in floor_chunks},
        args.repeats,
    )
    floors = {size: timed.pop(f"floor {size}") for size in floor_chunks}
    results = {**timed, "floor": min(floors.values())}
    print(
        f"rows={args.rows} steps={args.steps} threads={torch.get_num_threads()} "
        f"repeats={args.repeats} (medians)"
    )
    print(
        f"internal batch (from {args.budget_mb:.0f} MiB budget): {ours.internal_batch_size} interpolated rows"
    )
    for name, seconds in results.items():
        print(f"  {name:7s} {args.rows / seconds:9.1f} rows/s  ({seconds:.3f} s)")
    floor_line = ", ".join(f"{args.rows / t:.1f} rows/s in chunks of {size}" for size, t in floors.items())
    print(f"  (floor: {floor_line})")
    print(f"  ours / captum = {results['captum'] / results['ours']:.2f}x")
    print(f"  ours / floor  = {results['floor'] / results['ours']:.2%} of the floor's rows/s")
    print(f"  peak RSS growth of one engine run: {growth / 2**20:.1f} MiB (budget {args.budget_mb:.0f} MiB)")
    print(f"  of which live tensors (child process, fixed mmap threshold): {live_tensor_peak():.1f} MiB")

    layer_report(ours, numeric, categorical, run_ours)
    torch_export_report(wrapper, baseline, numeric, categorical, meta, run_ours)
    adaptive_report()
    if not args.no_tensorflow:
        tensorflow_report(wrapper, baseline, numeric, categorical, meta)


def layer_report(ours: Any, numeric, categorical, run_inputs: Callable[[], None]) -> None:
    """Cost of attributing each unit of a hidden layer (ig.layer_attributions) against the
    input-level pass, and against plain Captum LayerIntegratedGradients on the same layer."""
    at_layer = ours.layer("mlp.1")
    wrapper = ours.adapter
    x_num, x_cat = wrapper.tensors(numeric, categorical)
    base = (ours.base_num.expand_as(x_num), ours.base_cat.expand_as(x_cat))
    captum_layer = LayerIntegratedGradients(wrapper, at_layer.layer)
    timed = interleaved_medians(
        {
            "inputs": run_inputs,
            "layer": lambda: at_layer.attribute(numeric, categorical, args.steps),
            "captum": lambda: captum_layer.attribute((x_num, x_cat), baselines=base, n_steps=args.steps),
        },
        args.repeats,
    )
    print(f"hidden layer mlp.1 ({at_layer.units} units), same rows and steps:")
    cost = timed["layer"] / timed["inputs"]
    print(f"  ours    {args.rows / timed['layer']:9.1f} rows/s = {cost:.2f}x the time of the input pass")
    print(f"  captum  {args.rows / timed['captum']:9.1f} rows/s (LayerIntegratedGradients)")
    print(f"  ours / captum = {timed['captum'] / timed['layer']:.2f}x")


def torch_export_report(wrapper, baseline, numeric, categorical, meta, run_eager: Callable[[], None]) -> None:
    """The same model saved as a torch.export artifact (unflattened on load) through the engine."""
    import tempfile

    from ig_airflow.artifacts import load_artifact, save_artifact

    with tempfile.TemporaryDirectory() as tmp:
        save_artifact(wrapper.model, f"{tmp}/exported", inputs=meta.inputs, loader="torch_export")
        loaded = load_artifact(f"{tmp}/exported")
    settings = IGSection(
        method="gausslegendre", n_steps=args.steps, tolerance=None, memory_budget_mb=args.budget_mb
    )
    exported = torch_attributor(TorchModelWrapper(loaded.model, loaded.metadata), baseline, settings)
    timed = interleaved_medians(
        {"eager": run_eager, "exported": lambda: exported.attribute(numeric, categorical, args.steps)},
        args.repeats,
    )
    seconds, eager_seconds = timed["exported"], timed["eager"]
    print("torch.export artifact (same weights, unflattened graph):")
    speed = eager_seconds / seconds
    print(f"  ours    {args.rows / seconds:9.1f} rows/s  ({seconds:.3f} s) = {speed:.2f}x the eager module")


def tensorflow_report(wrapper, baseline, numeric, categorical, meta) -> None:
    """The same model as Keras (weights copied): our TF engine vs the TF forward+gradient floor."""
    import tensorflow as tf

    from ig_airflow.backends.keras import KerasBackend
    from ig_airflow.demo.keras_model import keras_from_torch, keras_input_spec

    model = keras_from_torch(wrapper.model)
    tf_meta = meta.model_copy(update={"inputs": keras_input_spec(meta.inputs)})
    settings = IGSection(
        method="gausslegendre", n_steps=args.steps, tolerance=None, memory_budget_mb=args.budget_mb
    )
    ours = KerasBackend().attributor(model, tf_meta, baseline, settings)
    x_num = tf.constant(np.tile(numeric, (args.steps, 1)), tf.float32)
    x_cat = tf.constant(np.tile(categorical, (args.steps, 1)), tf.int32)

    def run_floor() -> None:
        for start in range(0, len(x_num), args.floor_chunk):
            chunk = x_num[start : start + args.floor_chunk]
            with tf.GradientTape() as tape:
                tape.watch(chunk)
                out = tf.sigmoid(model([chunk, x_cat[start : start + args.floor_chunk]], training=False))
            tape.gradient(out, chunk)

    timed = interleaved_medians(
        {"ours": lambda: ours.attribute(numeric, categorical, args.steps), "floor": run_floor}, args.repeats
    )
    ours_s, floor_s = timed["ours"], timed["floor"]
    print(f"tensorflow (same model as Keras, internal batch {ours.internal_batch_size}):")
    print(f"  ours    {args.rows / ours_s:9.1f} rows/s  ({ours_s:.3f} s)")
    print(f"  floor   {args.rows / floor_s:9.1f} rows/s  ({floor_s:.3f} s)")
    print(f"  ours / floor  = {floor_s / ours_s:.2%} of the floor's rows/s")


def adaptive_report() -> None:
    """Adaptive steps at a 1% tolerance on the Adult demo model vs fixed step counts."""
    import tempfile

    import pandas as pd

    from ig_airflow.artifacts import load_artifact
    from ig_airflow.core.baselines import resolve_baseline
    from ig_airflow.core.encoding import encode_rows
    from ig_airflow.demo.prepare import prepare_demo

    os.environ.setdefault("IG_AIRFLOW_TRUSTED_MODULES", "ig_airflow.demo")  # the demo model's class
    with tempfile.TemporaryDirectory() as tmp:
        paths = prepare_demo(tmp)
        artifact = load_artifact(paths["artifact"])
        baseline = resolve_baseline(artifact.metadata.inputs, artifact.metadata.baseline, paths["train"])
        rows = pd.read_parquet(paths["test"]).sample(args.adaptive_rows, random_state=0)
    numeric, categorical = encode_rows(rows, artifact.metadata.inputs)
    wrapper = TorchModelWrapper(artifact.model, artifact.metadata)
    adaptive = IGSection(n_steps=32, tolerance=0.01, max_steps=1024)
    start = time.perf_counter()
    result = explain_rows(torch_attributor(wrapper, baseline, adaptive), numeric, categorical, adaptive)
    seconds = time.perf_counter() - start
    coverage = result.converged.mean()
    n = len(rows)
    print(
        f"adaptive on the Adult demo model (tol 1%, 32..1024 steps, {n} rows, {n / seconds:.0f} rows/s): "
        f"{coverage:.2%} of rows within tolerance, {result.gradient_evaluations} gradient evaluations, "
        f"mean completeness error {result.completeness_error.mean():.4%}"
    )
    for steps in (32, 64, 128, 256, 512, 1024):
        settings = IGSection(method="gausslegendre", n_steps=steps, max_steps=steps, tolerance=None)
        fixed = explain_rows(torch_attributor(wrapper, baseline, settings), numeric, categorical, settings)
        change = fixed.prediction - fixed.baseline_prediction
        share = np.mean(np.abs(fixed.delta) <= 0.01 * np.abs(change) + adaptive.atol)
        print(f"  fixed {steps:5d} steps: {share:.2%} within tolerance, {n * steps} gradient evaluations")
        if share >= coverage:
            ratio = result.gradient_evaluations / (n * steps)
            print(
                f"  adaptive needs {ratio:.2f}x the evaluations of the smallest fixed step count ({steps}) "
                "with the same coverage"
            )
            break
    else:
        ratio = result.gradient_evaluations / (n * 1024)
        print(
            f"  no fixed step count up to 1024 reaches the adaptive coverage; adaptive uses {ratio:.2f}x "
            "the evaluations of 1024 fixed steps"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--budget-mb", type=float, default=256)
    parser.add_argument("--floor-chunk", type=int, default=20_480)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--adaptive-rows", type=int, default=4000)
    parser.add_argument("--no-tensorflow", action="store_true")
    parser.add_argument("--live-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    main()
