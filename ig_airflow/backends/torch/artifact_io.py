"""PyTorch model files in an artifact: a ``state_dict`` loaded with ``weights_only=True`` into
an importable class (default), a ``torch.export`` archive (``.pt2``, no class import, see
:mod:`ig_airflow.backends.torch.export`), TorchScript, or a fully pickled module that loads
only with ``allow_pickle``."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch

from ig_airflow.backends.torch.export import export_model, load_exported
from ig_airflow.core.backend import SavedModelFile
from ig_airflow.exceptions import ArtifactError
from ig_airflow.spec import ArtifactMetadata, InputSpec
from ig_airflow.trust import require_trusted


def import_object(ref: str, uri: str) -> Any:
    """Import ``'package.module:Name'`` from a module the deployment trusts
    (:mod:`ig_airflow.trust`); anything else is refused before it is imported."""
    module_name, sep, attr = ref.partition(":")
    if not sep:
        raise ArtifactError(f"{uri}: model_class must be 'package.module:Class', got {ref!r}")
    require_trusted(ref, "model_class", uri)
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ArtifactError(f"{uri}: cannot import model_class {ref!r}: {exc}") from None
    return obj


def save_torch_model(
    model: Any, directory: Path, spec: InputSpec, loader: str | None, model_class: str | None
) -> SavedModelFile:
    """Write an ``nn.Module`` or ``ExportedProgram`` with ``loader`` (default: state_dict; a model
    built from ``torch.nn`` containers alone, e.g. ``nn.Sequential(...)``, which no keyword
    arguments rebuild: torch_export)."""
    if isinstance(model, torch.export.ExportedProgram):
        if loader not in (None, "torch_export"):
            raise ArtifactError(f"an ExportedProgram is saved with loader 'torch_export', not {loader!r}")
        torch.export.save(model, directory / "model.pt2")
        return SavedModelFile("torch_export", "model.pt2")
    loader = loader or ("torch_export" if type(model).__module__.startswith("torch.nn.") else "state_dict")
    if loader == "state_dict":
        model_class = model_class or f"{type(model).__module__}:{type(model).__qualname__}"
        torch.save(model.state_dict(), directory / "model.pt")
        return SavedModelFile(loader, "model.pt", model_class)
    if loader == "torch_export":
        torch.export.save(export_model(model, spec), directory / "model.pt2")
        return SavedModelFile(loader, "model.pt2")
    if loader == "torchscript":
        _script(model).save(str(directory / "model.ts.pt"))
        return SavedModelFile(loader, "model.ts.pt")
    if loader == "pickle":
        torch.save(model, directory / "model.pkl.pt")
        return SavedModelFile(loader, "model.pkl.pt")
    raise ArtifactError(f"unknown PyTorch loader {loader!r}")


def _script(model: torch.nn.Module) -> torch.jit.ScriptModule:
    if isinstance(model, torch.jit.ScriptModule):
        return model
    try:
        return torch.jit.script(model)
    except Exception as exc:  # noqa: BLE001 - TorchScript raises many types
        raise ArtifactError(
            f"cannot script {type(model).__name__} ({type(exc).__name__}); "
            "pass a torch.jit.trace()d module instead"
        ) from None


def load_torch_model(path: Path, metadata: ArtifactMetadata, allow_pickle: bool, uri: str) -> Any:
    """Load the verified model file at ``path`` in eval mode."""
    if metadata.loader == "pickle":
        if not allow_pickle:
            raise ArtifactError(
                f"{uri}: the model is a pickled module, which runs arbitrary code when loaded; "
                "set model.allow_pickle: true in the run config only if you trust its source"
            )
        model = torch.load(path, map_location="cpu", weights_only=False)
    elif metadata.loader == "torch_export":
        model = load_exported(path, allow_pickle, uri)
    elif metadata.loader == "torchscript":
        model = torch.jit.load(str(path), map_location="cpu")
    else:
        model = _load_state_dict(path, metadata, uri)
    model.eval()
    return model


def _load_state_dict(path: Path, metadata: ArtifactMetadata, uri: str) -> Any:
    if not metadata.model_class:
        raise ArtifactError(f"{uri}: loader 'state_dict' needs model_class ('package.module:Class')")
    cls = import_object(metadata.model_class, uri)
    if not isinstance(cls, type) or not issubclass(cls, torch.nn.Module):
        raise ArtifactError(f"{uri}: model_class {metadata.model_class!r} is not a torch.nn.Module class")
    model = cls(**metadata.model_kwargs)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises several types here
        raise ArtifactError(f"{uri}: cannot load state_dict {path.name}: {exc}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ArtifactError(f"{uri}: state_dict does not fit {metadata.model_class}: {exc}") from None
    return model
