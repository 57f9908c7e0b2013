"""The PyTorch :class:`~ig_airflow.core.backend.FrameworkBackend`.

This module imports no torch: the registry can name and list it cheaply. Its methods import
the backend's modules, which need torch (``pip install 'ig-airflow[torch]'``).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ig_airflow.backends import require_framework

if TYPE_CHECKING:
    from ig_airflow.config import IGSection
    from ig_airflow.core.backend import Attributor, SavedModelFile
    from ig_airflow.core.baselines import Baseline
    from ig_airflow.spec import ArtifactMetadata, InputSpec


class TorchBackend:
    """PyTorch modules (``state_dict``, ``torch_export``, ``torchscript``, ``pickle`` files),
    IG by the vectorised engine or Captum (``ig.engine``)."""

    name = "pytorch"
    loaders = ("state_dict", "torch_export", "torchscript", "pickle")

    def owns(self, model: Any) -> bool:
        torch = sys.modules.get("torch")  # a torch model means torch is imported already
        return torch is not None and isinstance(model, torch.nn.Module | torch.export.ExportedProgram)

    def save(
        self, model: Any, directory: Path, spec: InputSpec, loader: str | None, model_class: str | None
    ) -> SavedModelFile:
        from ig_airflow.backends.torch.artifact_io import save_torch_model

        return save_torch_model(model, directory, spec, loader, model_class)

    def load(self, path: Path, metadata: ArtifactMetadata, allow_pickle: bool, uri: str) -> Any:
        require_framework("torch", "torch")
        from ig_airflow.backends.torch.artifact_io import load_torch_model

        return load_torch_model(path, metadata, allow_pickle, uri)

    def check(self, model: Any, metadata: ArtifactMetadata) -> None:
        from ig_airflow.backends.torch.wrapper import TorchModelWrapper

        TorchModelWrapper(model, metadata)  # resolves the embedding layers

    def predict(
        self, model: Any, metadata: ArtifactMetadata, numeric: np.ndarray, categorical: np.ndarray
    ) -> np.ndarray:
        import torch

        from ig_airflow.backends.torch.wrapper import TorchModelWrapper
        from ig_airflow.core.calling import model_arrays

        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
        wrapper = TorchModelWrapper(model, metadata, dtype=dtype)  # in the model's own precision
        with torch.no_grad():
            scores = wrapper(*wrapper.tensors(*model_arrays(metadata.inputs, numeric, categorical)))
        return wrapper.ops.numpy(scores)

    def attributor(
        self, model: Any, metadata: ArtifactMetadata, baseline: Baseline, settings: IGSection
    ) -> Attributor:
        import torch

        from ig_airflow.backends.torch.attribution import resolve_device, torch_attributor
        from ig_airflow.backends.torch.wrapper import TorchModelWrapper

        dtype = torch.float64 if settings.dtype == "float64" else torch.float32
        wrapper = TorchModelWrapper(model, metadata, dtype=dtype, device=resolve_device(settings.device))
        return torch_attributor(wrapper, baseline, settings)

    def limit_threads(self, threads: int) -> None:
        require_framework("torch", "torch").set_num_threads(max(1, threads))

    @contextlib.contextmanager
    def randomised(self, model: Any, seed: int) -> Iterator[None]:
        import torch

        module = model.module() if isinstance(model, torch.export.ExportedProgram) else model
        tensors = [t for t in module.state_dict(keep_vars=True).values() if t.is_floating_point()]
        saved = [t.detach().clone() for t in tensors]
        generator = torch.Generator().manual_seed(seed)
        try:
            with torch.no_grad():
                for tensor in tensors:
                    scale = (
                        tensor.detach().float().std() if tensor.numel() > 1 else tensor.detach().abs().float()
                    )
                    noise = torch.randn(tensor.shape, generator=generator) * scale
                    tensor.copy_(noise.to(tensor.dtype))
            yield
        finally:
            with torch.no_grad():
                for tensor, original in zip(tensors, saved, strict=True):
                    tensor.copy_(original)
