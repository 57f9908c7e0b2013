"""PyTorch models as ``torch.export`` archives (``.pt2``): self-contained and free of pickle.

A ``.pt2`` archive holds the traced graph as JSON and the weights as raw tensor bytes, so it
loads without importing the model's class. It replaces TorchScript, which torch 2.13
deprecates. The graph is *unflattened* on load (:func:`torch.export.unflatten`): the
submodule hierarchy of the original model comes back, so forward hooks on embedding layers,
and with them layer attributions, work as on the eager model.

``torch.export.load`` itself unpickles some members (weights or constants flagged
``use_pickle``, custom and opaque objects, and any ``.pt`` member that ``weights_only``
loading rejects). :func:`pickled_members` finds those members before anything is loaded; an
archive with any of them loads only with ``allow_pickle``.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import torch

from ig_airflow.core.calling import feature_columns, model_arrays
from ig_airflow.core.encoding import placeholder_rows
from ig_airflow.exceptions import ArtifactError
from ig_airflow.spec import InputSpec

EXAMPLE_BATCH = 2  # torch.export specialises sizes 0 and 1; a batch of 2 stays dynamic


def example_arguments(spec: InputSpec) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """Zero example inputs in the spec's calling style and their dynamic batch dimension (index
    0 for every categorical feature, or its out-of-vocabulary index)."""
    x_float, x_index = model_arrays(spec, *placeholder_rows(spec, EXAMPLE_BATCH))
    x_num = torch.as_tensor(x_float, dtype=torch.float32)
    x_cat = torch.as_tensor(x_index, dtype=torch.long)
    batch = torch.export.Dim("batch")
    if spec.calling == "dense":
        return (x_num,), ({0: batch},)
    if spec.calling == "positional":
        return (x_num, x_cat), ({0: batch}, {0: batch})
    columns = feature_columns(spec, x_num, x_cat)
    dims = {name: {0: batch} for name in columns}
    if spec.calling == "dict":
        return (columns,), (dims,)
    return tuple(columns.values()), tuple(dims.values())


def export_model(model: torch.nn.Module, spec: InputSpec) -> torch.export.ExportedProgram:
    """Export the model as the spec calls it, with a dynamic batch dimension."""
    example, dynamic = example_arguments(spec)
    try:
        return torch.export.export(model.eval(), example, dynamic_shapes=dynamic)
    except Exception as exc:  # noqa: BLE001 - torch.export raises many types
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ArtifactError(
            f"cannot torch.export {type(model).__name__} called with {spec.calling} inputs "
            f"({type(exc).__name__}: {first_line}); save it as a state_dict instead"
        ) from None


def pickled_members(path: Path) -> list[str]:
    """Names of the archive members that ``torch.export.load`` would unpickle."""
    found: list[str] = []
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if name.endswith("_config.json") and "/data/" in name:
                config = json.loads(archive.read(name)).get("config", {})
                for fqn, payload in config.items():
                    prefix = str(payload.get("path_name", ""))
                    if payload.get("use_pickle") or prefix.startswith(("custom_obj", "opaque_obj")):
                        found.append(f"{name}: {fqn}")
            elif name.endswith(".pt"):
                try:
                    torch.load(io.BytesIO(archive.read(name)), map_location="cpu", weights_only=True)
                except Exception:  # noqa: BLE001 - any refusal means it needs full unpickling
                    found.append(name)
    return found


def load_exported(path: Path, allow_pickle: bool, uri: str) -> torch.nn.Module:
    """Load a ``.pt2`` archive as an unflattened module (the original submodule names)."""
    try:
        unsafe = pickled_members(path)
    except (zipfile.BadZipFile, json.JSONDecodeError, KeyError) as exc:
        raise ArtifactError(f"{uri}: {path.name} is not a torch.export archive ({exc})") from None
    if unsafe and not allow_pickle:
        raise ArtifactError(
            f"{uri}: {path.name} holds pickled members, which run arbitrary code when loaded "
            f"({', '.join(unsafe[:3])}); set model.allow_pickle: true in the run config only if you "
            "trust its source"
        )
    try:
        program = torch.export.load(str(path))
    except Exception as exc:  # noqa: BLE001 - the deserializer raises many types
        raise ArtifactError(f"{uri}: cannot load {path.name}: {type(exc).__name__}: {exc}") from None
    module: Any = torch.export.unflatten(program)
    return module
