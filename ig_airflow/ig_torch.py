"""PyTorch IG backends: a vectorised engine and Captum as the reference.

The vectorised engine builds the interpolated rows of many examples and steps in one batch,
runs one forward and one backward (gradients with respect to the interpolated inputs only)
per chunk, and weights the gradients with a quadrature rule whose weights sum to 1.
Categorical features are attributed at their embedding layers: the looked-up vectors of the
input and of the baseline are interpolated and substituted into the layers' outputs through
forward hooks (multi-layer IG, every embedding in the same pass), then summed over the
embedding dimension.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from ig_airflow.baselines import Baseline
from ig_airflow.config import IGSection
from ig_airflow.engine import FixedStepResult
from ig_airflow.exceptions import ConfigError
from ig_airflow.model_wrapper import TorchModelWrapper
from ig_airflow.quadrature import rule


def resolve_device(setting: str) -> torch.device:
    if setting == "cuda" and not torch.cuda.is_available():
        raise ConfigError("ig.device: cuda requested but torch.cuda.is_available() is False")
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def require_captum_method(settings: IGSection) -> None:
    if settings.method == "trapezoid":
        raise ConfigError("ig.method: the captum engine has no correct trapezoid rule; use gausslegendre")


@contextlib.contextmanager
def substitute_outputs(layers: Sequence[torch.nn.Module], values: Sequence[torch.Tensor]) -> Iterator[None]:
    """Make each layer return the given tensor instead of its own output."""

    def hook_for(value: torch.Tensor) -> Any:
        def hook(module: torch.nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
            if output.shape != value.shape:
                raise RuntimeError(
                    f"layer output shape {tuple(output.shape)} differs from the substituted "
                    f"{tuple(value.shape)}"
                )
            return value

        return hook

    handles = [layer.register_forward_hook(hook_for(v)) for layer, v in zip(layers, values, strict=True)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def capture_outputs(layers: Sequence[torch.nn.Module]) -> Iterator[list[torch.Tensor]]:
    captured: list[torch.Tensor | None] = [None] * len(layers)

    def hook_for(i: int) -> Any:
        def hook(module: torch.nn.Module, args: Any, output: torch.Tensor) -> None:
            captured[i] = output.detach()

        return hook

    handles = [layer.register_forward_hook(hook_for(i)) for i, layer in enumerate(layers)]
    try:
        yield captured  # type: ignore[misc]
    finally:
        for handle in handles:
            handle.remove()


# On CPU, glibc keeps the freed chunks of one forward+backward in its heap (its mmap threshold
# rises after the first large free), so the process's RSS peaks near twice the live tensors;
# chunks are sized from budget / ALLOCATOR_SLACK so that RSS, not only live tensors, stays
# within ig.memory_budget_mb (bench_ig_engine.py measures both).
ALLOCATOR_SLACK = 2.0


def bytes_per_interpolated_row(wrapper: TorchModelWrapper, baseline: Baseline) -> int:
    """Estimate memory per interpolated row: every module output kept for backward, its
    gradient, and the interpolated inputs (measured on a probe forward of 4 rows)."""
    total = 0

    def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel() * output.element_size()

    if isinstance(wrapper.model, torch.jit.ScriptModule):  # no hooks: one activation per weight row
        widths = sum(p.shape[0] for p in wrapper.model.parameters() if p.dim() >= 1)
        return max(int(widths * 4 * torch.finfo(wrapper.dtype).bits // 8 * 3), 64)
    handles = [m.register_forward_hook(hook) for m in wrapper.model.modules()]
    try:
        x_num, x_cat = wrapper.tensors(
            np.repeat(baseline.numeric[None, :], 4, 0), np.repeat(baseline.categorical[None, :], 4, 0)
        )
        with torch.no_grad():
            wrapper(x_num, x_cat)
    finally:
        for handle in handles:
            handle.remove()
    per_row = total / 4 + x_num[0].numel() * x_num.element_size()
    return max(int(per_row * 3), 64)


class TorchIG:
    """IG for a wrapped PyTorch model against one baseline row.

    Args:
        wrapper: the model wrapper (encodes rows, selects and calibrates the output).
        baseline: resolved baseline row.
        settings: the run's ``ig`` section (method, internal batch size, memory budget).
    """

    def __init__(self, wrapper: TorchModelWrapper, baseline: Baseline, settings: IGSection):
        self.wrapper = wrapper
        self.settings = settings
        self.layers = wrapper.embedding_layers
        self.base_num, self.base_cat = wrapper.tensors(
            baseline.numeric[None, :], baseline.categorical[None, :]
        )
        with torch.no_grad():
            self.base_embeddings, prediction = self._embed(self.base_num, self.base_cat)
        self.baseline_prediction = float(prediction[0])
        if settings.internal_batch_size:
            self.internal_batch_size = settings.internal_batch_size
        else:
            budget = settings.memory_budget_mb * 2**20 / ALLOCATOR_SLACK
            self.internal_batch_size = int(
                max(1, min(1 << 17, budget // bytes_per_interpolated_row(wrapper, baseline)))
            )

    def layer(self, name: str) -> TorchLayerIG:
        """A backend attributing to the units of the hidden layer ``name``."""
        return TorchLayerIG(self, name)

    def _embed(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        with capture_outputs(self.layers) as captured:
            prediction = self.wrapper(x_num, x_cat)
        return list(captured), prediction

    def attribute(self, numeric: np.ndarray, categorical: np.ndarray, n_steps: int) -> FixedStepResult:
        x_num, x_cat = self.wrapper.tensors(numeric, categorical)
        with torch.no_grad():
            embeddings, prediction = self._embed(x_num, x_cat)
        if self.settings.engine == "captum":
            ig_num, ig_emb = self._captum(x_num, x_cat, embeddings, n_steps)
        else:
            ig_num, ig_emb = self._vectorized(x_num, x_cat, embeddings, n_steps)
        n_rows = len(numeric)
        attributions = [ig_num * (x_num - self.base_num)]
        raw = [ig_num]
        for ig, emb, base in zip(ig_emb, embeddings, self.base_embeddings, strict=True):
            diff = (emb - base).reshape(n_rows, -1)
            attributions.append((ig.reshape(n_rows, -1) * diff).sum(1, keepdim=True))
            raw.append(ig.reshape(n_rows, -1).sum(1, keepdim=True))
        return FixedStepResult(
            attributions=torch.cat(attributions, 1).detach().cpu().double().numpy(),
            integrated_gradients=torch.cat(raw, 1).detach().cpu().double().numpy(),
            prediction=prediction.detach().cpu().double().numpy(),
        )

    def _vectorized(
        self, x_num: torch.Tensor, x_cat: torch.Tensor, embeddings: list[torch.Tensor], n_steps: int
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        weights_np, alphas_np = rule(self.settings.method, n_steps)
        dtype, device = self.wrapper.dtype, self.wrapper.device
        weights = torch.as_tensor(weights_np, dtype=dtype, device=device)
        alphas = torch.as_tensor(alphas_np, dtype=dtype, device=device)
        n_rows = len(x_num)
        rows_per_chunk = max(1, self.internal_batch_size // n_steps)
        ig_num = torch.empty_like(x_num)
        ig_emb = [torch.empty_like(e) for e in embeddings]
        for start in range(0, n_rows, rows_per_chunk):
            stop = min(start + rows_per_chunk, n_rows)
            r = stop - start
            inputs = [_interpolate(self.base_num, x_num[start:stop], alphas)]
            for emb, base in zip(embeddings, self.base_embeddings, strict=True):
                inputs.append(_interpolate(base, emb[start:stop], alphas))
            for tensor in inputs:
                tensor.requires_grad_(True)
            categories = x_cat[start:stop].repeat_interleave(n_steps, dim=0)
            with torch.enable_grad(), substitute_outputs(self.layers, inputs[1:]):
                output = self.wrapper(inputs[0], categories)
                grads = torch.autograd.grad(output.sum(), inputs)
            ig_num[start:stop] = _integrate(grads[0], weights, r)
            for target, grad in zip(ig_emb, grads[1:], strict=True):
                target[start:stop] = _integrate(grad, weights, r)
        return ig_num, ig_emb

    def _captum(
        self, x_num: torch.Tensor, x_cat: torch.Tensor, embeddings: list[torch.Tensor], n_steps: int
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        from captum.attr import IntegratedGradients

        require_captum_method(self.settings)
        n_rows = len(x_num)

        def forward(numeric: torch.Tensor, *layer_values: torch.Tensor) -> torch.Tensor:
            categories = x_cat.repeat(max(1, len(numeric) // n_rows), 1)
            with substitute_outputs(self.layers, layer_values):
                return self.wrapper(numeric, categories)

        ig = IntegratedGradients(forward, multiply_by_inputs=False)
        baselines = (
            self.base_num.expand_as(x_num),
            *[b.expand_as(e) for b, e in zip(self.base_embeddings, embeddings, strict=True)],
        )
        result = ig.attribute(
            (x_num, *embeddings),
            baselines=baselines,
            n_steps=n_steps,
            method=self.settings.method,
            internal_batch_size=max(n_rows, (self.internal_batch_size // n_rows) * n_rows),
        )
        return result[0], list(result[1:])


class TorchLayerIG:
    """IG in the activation space of one hidden layer (Captum's ``LayerIntegratedGradients``,
    alibi's ``layer=``): the layer's output is interpolated from its value at the baseline row
    to its value at the input row and substituted through a forward hook, every other input
    keeps its actual value; one attribution per unit of the layer's output (flattened).

    Args:
        parent: the input-level backend (model wrapper, baseline, settings, chunk size).
        name: the layer's module name, e.g. ``mlp.1``.
    """

    def __init__(self, parent: TorchIG, name: str):
        self.parent = parent
        self.name = name
        self.layer = parent.wrapper.layer(name)
        with torch.no_grad(), capture_outputs([self.layer]) as captured:
            parent.wrapper(parent.base_num, parent.base_cat)
        if not isinstance(captured[0], torch.Tensor):
            raise ConfigError(f"ig.layer_attributions: layer {name!r} does not return one tensor")
        self.base = captured[0]
        self.units = int(self.base[0].numel())
        self.baseline_prediction = parent.baseline_prediction

    def attribute(self, numeric: np.ndarray, categorical: np.ndarray, n_steps: int) -> FixedStepResult:
        wrapper = self.parent.wrapper
        x_num, x_cat = wrapper.tensors(numeric, categorical)
        with torch.no_grad(), capture_outputs([self.layer]) as captured:
            prediction = wrapper(x_num, x_cat)
        activation = captured[0]
        if self.parent.settings.engine == "captum":
            ig = self._captum(x_num, x_cat, n_steps)
        else:
            ig = self._vectorized(x_num, x_cat, activation, n_steps)
        n_rows = len(numeric)
        raw = ig.reshape(n_rows, -1)
        return FixedStepResult(
            attributions=(raw * (activation - self.base).reshape(n_rows, -1)).detach().cpu().double().numpy(),
            integrated_gradients=raw.detach().cpu().double().numpy(),
            prediction=prediction.detach().cpu().double().numpy(),
        )

    def _vectorized(
        self, x_num: torch.Tensor, x_cat: torch.Tensor, activation: torch.Tensor, n_steps: int
    ) -> torch.Tensor:
        wrapper = self.parent.wrapper
        weights_np, alphas_np = rule(self.parent.settings.method, n_steps)
        weights = torch.as_tensor(weights_np, dtype=activation.dtype, device=activation.device)
        alphas = torch.as_tensor(alphas_np, dtype=activation.dtype, device=activation.device)
        rows_per_chunk = max(1, self.parent.internal_batch_size // n_steps)
        ig = torch.empty_like(activation)
        for start in range(0, len(x_num), rows_per_chunk):
            stop = min(start + rows_per_chunk, len(x_num))
            path = _interpolate(self.base, activation[start:stop], alphas).requires_grad_(True)
            numeric = x_num[start:stop].repeat_interleave(n_steps, dim=0)
            categories = x_cat[start:stop].repeat_interleave(n_steps, dim=0)
            with torch.enable_grad(), substitute_outputs([self.layer], [path]):
                (grad,) = torch.autograd.grad(wrapper(numeric, categories).sum(), [path])
            ig[start:stop] = _integrate(grad, weights, stop - start)
        return ig

    def _captum(self, x_num: torch.Tensor, x_cat: torch.Tensor, n_steps: int) -> torch.Tensor:
        from captum.attr import LayerIntegratedGradients

        require_captum_method(self.parent.settings)
        n_rows = len(x_num)
        layer_ig = LayerIntegratedGradients(self.parent.wrapper, self.layer, multiply_by_inputs=False)
        return layer_ig.attribute(
            (x_num, x_cat),
            baselines=(self.parent.base_num.expand_as(x_num), self.parent.base_cat.expand_as(x_cat)),
            n_steps=n_steps,
            method=self.parent.settings.method,
            internal_batch_size=max(n_rows, (self.parent.internal_batch_size // n_rows) * n_rows),
        )


def _interpolate(base: torch.Tensor, values: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """``[r, *shape]`` rows and ``[n]`` alphas -> ``[r * n, *shape]`` path points (row-major)."""
    shape = values.shape[1:]
    a = alphas.view((1, -1) + (1,) * len(shape))
    path = base.unsqueeze(1) + a * (values - base).unsqueeze(1)
    return path.reshape((values.shape[0] * alphas.shape[0], *shape)).contiguous()


def _integrate(grad: torch.Tensor, weights: torch.Tensor, rows: int) -> torch.Tensor:
    shape = grad.shape[1:]
    out = torch.einsum("rnd,n->rd", grad.reshape(rows, weights.shape[0], -1), weights)
    return out.reshape((rows, *shape))
