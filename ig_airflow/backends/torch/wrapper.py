"""The PyTorch model as the IG algorithm sees it: rows -> tensors -> the calibrated score.

The model is called as the input spec's ``calling`` says: ``model(x_num, x_cat)`` (float
``[batch, n_numeric]`` and long ``[batch, n_categorical]`` of embedding indices), ``model({name:
column})``, ``model(*columns)`` or ``model(x_dense)``, and returns logits ``[batch]`` or
``[batch, n_outputs]``; :func:`ig_airflow.core.outputs.calibrated_scores` calibrates them.
Layers are captured and substituted through forward hooks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from ig_airflow.core.calling import attributed_layers, feature_columns
from ig_airflow.core.outputs import calibrated_scores
from ig_airflow.exceptions import ArtifactError
from ig_airflow.spec import ArtifactMetadata


class TorchOps:
    """:class:`~ig_airflow.core.backend.TensorOps` for torch tensors of one dtype and device."""

    def __init__(self, dtype: torch.dtype, device: torch.device):
        self.dtype, self.device = dtype, device

    def constant(self, array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(array, dtype=self.dtype, device=self.device)

    @staticmethod
    def numpy(tensor: torch.Tensor) -> np.ndarray:
        return tensor.detach().cpu().double().numpy()

    @staticmethod
    def interpolate(base: torch.Tensor, values: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
        """``[r, *shape]`` rows and ``[n]`` alphas -> ``[r * n, *shape]`` path points (row-major)."""
        shape = values.shape[1:]
        a = alphas.view((1, -1) + (1,) * len(shape))
        path = base.unsqueeze(1) + a * (values - base).unsqueeze(1)
        return path.reshape((values.shape[0] * alphas.shape[0], *shape)).contiguous()

    @staticmethod
    def integrate(grad: torch.Tensor, weights: torch.Tensor, rows: int) -> torch.Tensor:
        shape = grad.shape[1:]
        out = torch.einsum("rnd,n->rd", grad.reshape(rows, weights.shape[0], -1), weights)
        return out.reshape((rows, *shape))

    @staticmethod
    def gradients(
        fn: Callable[[list[torch.Tensor]], torch.Tensor], inputs: list[torch.Tensor]
    ) -> list[list[Any]]:
        """One forward; one backward per target column on the retained graph."""
        for tensor in inputs:
            tensor.requires_grad_(True)
        with torch.enable_grad():
            output = fn(inputs)
            n_targets = output.shape[1]
            return [
                list(torch.autograd.grad(output[:, t].sum(), inputs, retain_graph=t < n_targets - 1))
                for t in range(n_targets)
            ]

    def take(self, tensor: torch.Tensor, columns: np.ndarray) -> torch.Tensor:
        return torch.gather(tensor, 1, torch.as_tensor(columns, dtype=torch.long, device=tensor.device))

    @staticmethod
    def concat(parts: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat(list(parts))

    @staticmethod
    def repeat(tensor: torch.Tensor, times: int) -> torch.Tensor:
        return tensor.repeat_interleave(times, dim=0)

    @staticmethod
    def reshape(tensor: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        return tensor.reshape(shape)

    @staticmethod
    def sigmoid(tensor: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(tensor)

    @staticmethod
    def softmax(tensor: torch.Tensor) -> torch.Tensor:
        return torch.softmax(tensor, dim=-1)

    @staticmethod
    def log(tensor: torch.Tensor) -> torch.Tensor:
        return torch.log(tensor)


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
def capture_outputs(layers: Sequence[torch.nn.Module]) -> Iterator[list[Any]]:
    """Record each layer's output (detached) during the forward passes inside the block."""
    captured: list[Any] = [None] * len(layers)

    def hook_for(i: int) -> Any:
        def hook(module: torch.nn.Module, args: Any, output: torch.Tensor) -> None:
            captured[i] = output.detach() if isinstance(output, torch.Tensor) else output

        return hook

    handles = [layer.register_forward_hook(hook_for(i)) for i, layer in enumerate(layers)]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


class TorchModelWrapper:
    """Calls a PyTorch model on encoded rows and returns the calibrated explained score; the
    :class:`~ig_airflow.core.backend.ModelAdapter` of the PyTorch backend.

    Args:
        model: the loaded ``torch.nn.Module`` (eval mode).
        metadata: the artifact metadata (input spec, output, calibration).
        dtype: ``torch.float32`` or ``torch.float64``; the model is cast to it.
        device: torch device.
    """

    def __init__(self, model: Any, metadata: ArtifactMetadata, dtype: Any = None, device: Any = None):
        self.dtype = dtype or torch.float32
        self.device = torch.device(device or "cpu")
        self.ops = TorchOps(self.dtype, self.device)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        for param in self.model.parameters():
            param.requires_grad_(False)
        self.metadata = metadata
        self.spec = metadata.inputs
        if isinstance(model, torch.jit.ScriptModule) and self.spec.categorical:
            raise ArtifactError(
                "TorchScript models run their submodules inside a compiled graph, so embedding "
                f"layers cannot be attributed ({self.spec.categorical_names}); save the model "
                "with loader 'torch_export' or 'state_dict' instead"
            )
        self.embedding_layers = [self.layer(name) for name in attributed_layers(self.spec)]
        strings = [f.name for f in self.spec.categorical if f.input_encoding == "string"]
        if strings:
            raise ArtifactError(f"a PyTorch model takes indices, not strings: features {strings}")
        if len({id(m) for m in self.embedding_layers}) != len(self.embedding_layers):
            raise ArtifactError("two categorical features name the same embedding layer")

    def layer(self, name: str) -> Any:
        """The submodule at ``name``; a clear error lists the layers that exist."""
        try:
            return self.model.get_submodule(name)
        except AttributeError:
            embeddings = [n for n, m in self.model.named_modules() if isinstance(m, torch.nn.Embedding)]
            others = [n for n, m in self.model.named_modules() if n and not list(m.children())]
            others = [n for n in others if n not in embeddings]
            raise ArtifactError(
                f"unknown layer name {name!r}; embedding layers in the model: {embeddings}; "
                f"other layers: {others}"
            ) from None

    def tensors(self, numeric: np.ndarray, categorical: np.ndarray) -> tuple[Any, Any]:
        return (
            torch.as_tensor(numeric, dtype=self.dtype, device=self.device),
            torch.as_tensor(categorical, dtype=torch.long, device=self.device),
        )

    def __call__(self, x_num: Any, x_cat: Any) -> Any:
        """Calibrated scores ``[batch, n_outputs]``, the model called as the spec says."""
        calling = self.spec.calling
        if calling == "dense":
            logits = self.model(x_num)
        elif calling == "dict":
            logits = self.model(feature_columns(self.spec, x_num, x_cat))
        elif calling == "per_feature":
            logits = self.model(*feature_columns(self.spec, x_num, x_cat).values())
        else:
            logits = self.model(x_num, x_cat)
        return calibrated_scores(logits, self.metadata.output, self.metadata.calibration, self.ops)

    capture = staticmethod(capture_outputs)
    substitute = staticmethod(substitute_outputs)

    @staticmethod
    def inference() -> Any:
        return torch.no_grad()

    def bytes_per_interpolated_row(self, x_num: Any, x_cat: Any) -> int:
        """Memory per interpolated row: every module output kept for backward, its gradient,
        and the interpolated inputs (measured on a probe forward of the given rows)."""
        if isinstance(self.model, torch.jit.ScriptModule):  # no hooks: one activation per weight row
            widths = sum(p.shape[0] for p in self.model.parameters() if p.dim() >= 1)
            return max(int(widths * 4 * torch.finfo(self.dtype).bits // 8 * 3), 64)
        total = 0

        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            nonlocal total
            if isinstance(output, torch.Tensor):
                total += output.numel() * output.element_size()

        handles = [m.register_forward_hook(hook) for m in self.model.modules()]
        try:
            with torch.no_grad():
                self(x_num, x_cat)
        finally:
            for handle in handles:
                handle.remove()
        per_row = total / len(x_num) + x_num[0].numel() * x_num.element_size()
        return max(int(per_row * 3), 64)
