"""Several targets per row in one pass against explaining each target separately, in one run.

Model: the engine benchmark's tabular net (20 numeric inputs, 6 embeddings of vocabulary 1000
and dimension 16, 3x256 ReLU MLP) with a 10-class softmax head. Each row is explained for its
top-k classes (``target: {top_k: k}``). Prints medians over --repeats interleaved rounds of:
  - one pass:  the engine with k targets per row (one forward per chunk, k backwards)
  - separate:  the engine run k times, one target each (what a user without multi-target does)
  - single:    one target (the cost of one explanation)
  - captum:    plain Captum LayerIntegratedGradients, once per target (its ``target=``)
and the ratios one pass / separate (below 1 = cheaper) and one pass / single (the cost of k
targets in units of one).

Usage: python benchmarks/bench_multi_target.py [--rows 1024] [--steps 32] [--top-k 3] [--repeats 5]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _measure import interleaved_medians
from bench_ig_engine import build
from captum.attr import LayerIntegratedGradients

from ig_airflow.backends.torch.attribution import torch_attributor
from ig_airflow.config import IGSection

CLASSES = 10


def main() -> None:
    torch.set_num_threads(args.threads or torch.get_num_threads())
    output = {"link": "softmax", "target": {"top_k": args.top_k}}
    wrapper, baseline, numeric, categorical, meta = build(args.rows, n_outputs=CLASSES, output=output)
    ours = torch_attributor(
        wrapper, baseline, IGSection(method="gausslegendre", n_steps=args.steps, tolerance=None)
    )
    targets = ours.scores(wrapper(*ours.tensors(numeric, categorical)), None).targets  # each row's top k
    one_pass = ours.attribute(numeric, categorical, args.steps, targets)
    for t in range(args.top_k):  # the one pass gives what separate runs give
        alone = ours.attribute(numeric, categorical, args.steps, targets[:, [t]])
        np.testing.assert_allclose(one_pass.attributions[t :: args.top_k], alone.attributions, atol=1e-5)

    model = wrapper.model
    layers = [model.numeric_input] + [model.get_submodule(f.embedding_layer) for f in meta.inputs.categorical]
    lig = LayerIntegratedGradients(wrapper, layers)
    x_num, x_cat = ours.tensors(numeric, categorical)
    base = (torch.zeros_like(x_num), torch.zeros_like(x_cat))

    def captum() -> None:
        for t in range(args.top_k):
            target = torch.as_tensor(targets[:, t])
            lig.attribute((x_num, x_cat), baselines=base, target=target, n_steps=args.steps)

    timed = interleaved_medians(
        {
            "one pass": lambda: ours.attribute(numeric, categorical, args.steps, targets),
            "separate": lambda: [
                ours.attribute(numeric, categorical, args.steps, targets[:, [t]]) for t in range(args.top_k)
            ],
            "single": lambda: ours.attribute(numeric, categorical, args.steps, targets[:, :1]),
            "captum": captum,
        },
        args.repeats,
    )
    print(
        f"rows={args.rows} steps={args.steps} top_k={args.top_k} classes={CLASSES} "
        f"threads={torch.get_num_threads()} repeats={args.repeats} (medians)"
    )
    for name, seconds in timed.items():
        print(f"  {name:9s} {args.rows / seconds:9.1f} rows/s  ({seconds:.3f} s)")
    print(f"  one pass / separate = {timed['one pass'] / timed['separate']:.2f} of the time")
    print(f"  one pass / single   = {timed['one pass'] / timed['single']:.2f}x one target's time")
    print(f"  one pass vs captum  = {timed['captum'] / timed['one pass']:.2f}x faster")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    main()
