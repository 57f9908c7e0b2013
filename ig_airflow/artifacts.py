"""Model artifacts: a directory holding the model file(s) and ``ig_artifact.json``.

The metadata says which framework and loader to use, the input spec (numeric columns;
categorical columns with vocabularies, out-of-vocabulary index and embedding layer), the
output to explain, an optional calibration, a default baseline and the sha256 of every file.
Loading verifies every checksum. PyTorch models load as a state_dict with
``torch.load(weights_only=True)`` into an importable class by default; ``torch.export``
archives (``.pt2``, no class import, see :mod:`ig_airflow.torch_export`) and TorchScript are
accepted; a fully pickled module loads only with ``allow_pickle=True``.

Publishing from a retraining job is one call::

    save_artifact(model, "s3://models/adult/v3", inputs=spec, model_kwargs={...})
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ig_airflow.config import BaselineSection
from ig_airflow.exceptions import ArtifactError
from ig_airflow.io import filesystem, sha256_file, sha256_json

METADATA_FILE = "ig_artifact.json"
FORMAT_VERSION = 1
OOV_TOKEN = "<OOV>"  # a categorical value that maps to the feature's out-of-vocabulary index


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NumericFeature(_Strict):
    name: str
    min: float | None = Field(None, description="Lowest valid value (validation range).")
    max: float | None = Field(None, description="Highest valid value (validation range).")


class CategoricalFeature(_Strict):
    name: str
    vocabulary: list[str] = Field(description="Known values; index order follows this list.")
    oov_index: int = Field(0, ge=0, description="Embedding row for unseen values.")
    embedding_layer: str = Field(description="Module path of the embedding this feature feeds.")

    @model_validator(mode="after")
    def _check(self) -> CategoricalFeature:
        if len(set(self.vocabulary)) != len(self.vocabulary):
            raise ValueError(f"vocabulary of {self.name!r} has duplicate values")
        if self.oov_index > len(self.vocabulary):
            raise ValueError(f"oov_index of {self.name!r} must be <= len(vocabulary)")
        return self

    def index_map(self) -> dict[str, int]:
        """Value -> embedding index: known values fill the indices other than ``oov_index``."""
        indices = [i for i in range(len(self.vocabulary) + 1) if i != self.oov_index]
        mapping = dict(zip(self.vocabulary, indices, strict=True))
        mapping[OOV_TOKEN] = self.oov_index
        return mapping

    @property
    def cardinality(self) -> int:
        return len(self.vocabulary) + 1


class InputSpec(_Strict):
    numeric: list[NumericFeature] = Field(default_factory=list)
    categorical: list[CategoricalFeature] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> InputSpec:
        names = self.feature_names
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"feature names appear twice: {dupes}")
        return self

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.numeric] + [f.name for f in self.categorical]

    @property
    def numeric_names(self) -> list[str]:
        return [f.name for f in self.numeric]

    @property
    def categorical_names(self) -> list[str]:
        return [f.name for f in self.categorical]


class OutputSpec(_Strict):
    index: int = Field(0, ge=0, description="Column of the model output to explain.")
    explain: Literal["logit", "probability"] = "probability"
    link: Literal["sigmoid", "softmax"] = Field(
        "sigmoid", description="Logits -> probability when explain=probability."
    )


class Calibration(_Strict):
    method: Literal["none", "platt", "temperature"] = "none"
    a: float = Field(1.0, description="Platt slope: p = sigmoid(a*z + b).")
    b: float = Field(0.0, description="Platt intercept.")
    temperature: float = Field(1.0, gt=0, description="p = softmax(z / T) (sigmoid for 1 logit).")


class ArtifactMetadata(_Strict):
    format_version: int = FORMAT_VERSION
    framework: Literal["pytorch", "tensorflow"]
    loader: Literal["state_dict", "torch_export", "torchscript", "pickle", "keras", "savedmodel"]
    model_file: str
    model_class: str | None = Field(None, description="'module:Class' for state_dict loading.")
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    custom_objects_module: str | None = Field(
        None, description="Importable module that registers Keras custom layers."
    )
    inputs: InputSpec
    output: OutputSpec = OutputSpec()
    calibration: Calibration = Calibration()
    baseline: BaselineSection = BaselineSection()
    files: dict[str, str] = Field(default_factory=dict, description="file name -> sha256")
    created_at: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _loader_matches(self) -> ArtifactMetadata:
        allowed = {
            "pytorch": {"state_dict", "torch_export", "torchscript", "pickle"},
            "tensorflow": {"keras", "savedmodel"},
        }[self.framework]
        if self.loader not in allowed:
            raise ValueError(f"loader {self.loader!r} is not valid for framework {self.framework!r}")
        if self.loader == "state_dict" and not self.model_class:
            raise ValueError("loader 'state_dict' needs model_class ('package.module:Class')")
        return self

    def checksum(self) -> str:
        """One hash over all file checksums and the metadata that changes attributions."""
        return sha256_json(self.model_dump(mode="json", exclude={"created_at"}))


@dataclass
class LoadedArtifact:
    """A verified artifact: its metadata, the framework model object and where it came from."""

    uri: str
    metadata: ArtifactMetadata
    model: Any
    local_dir: Path

    @property
    def checksum(self) -> str:
        return self.metadata.checksum()


def import_object(ref: str) -> Any:
    """Import ``'package.module:Name'`` (or ``package.module.Name``)."""
    module_name, sep, attr = ref.partition(":")
    if not sep:
        module_name, _, attr = ref.rpartition(".")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ArtifactError(f"cannot import {ref!r}: {exc}") from None
    return obj


def read_metadata(uri: str) -> ArtifactMetadata:
    """Read and validate ``ig_artifact.json`` of the artifact at ``uri``."""
    fs, path = filesystem(uri)
    meta_path = f"{path.rstrip('/')}/{METADATA_FILE}"
    if not fs.exists(meta_path):
        raise ArtifactError(f"{uri}: not a model artifact (no {METADATA_FILE})")
    with fs.open(meta_path, "rb") as fh:
        try:
            raw = json.loads(fh.read())
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"{uri}/{METADATA_FILE}: invalid JSON: {exc}") from None
    try:
        return ArtifactMetadata.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ArtifactError(f"{uri}/{METADATA_FILE}: {problems}") from None


def _localise(uri: str) -> Path:
    fs, path = filesystem(uri)
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    if "file" in protocol or "local" in protocol:
        return Path(path)
    local = Path(tempfile.mkdtemp(prefix="ig_artifact_"))
    fs.get(path.rstrip("/") + "/", str(local), recursive=True)
    return local


def verify_checksums(local_dir: Path, metadata: ArtifactMetadata, uri: str) -> None:
    if metadata.model_file not in metadata.files:
        raise ArtifactError(f"{uri}: model file {metadata.model_file!r} has no checksum in metadata")
    for name, expected in sorted(metadata.files.items()):
        file = local_dir / name
        if not file.exists():
            raise ArtifactError(f"{uri}: file {name!r} listed in {METADATA_FILE} is missing")
        actual = sha256_file(file) if file.is_file() else _sha256_dir(file)
        if actual != expected:
            raise ArtifactError(
                f"{uri}: checksum mismatch for {name!r}: expected sha256 {expected}, got {actual}"
            )


def _sha256_dir(directory: Path) -> str:
    return sha256_json(
        {str(p.relative_to(directory)): sha256_file(p) for p in sorted(directory.rglob("*")) if p.is_file()}
    )


def load_artifact(uri: str, allow_pickle: bool = False) -> LoadedArtifact:
    """Load the artifact at ``uri`` after verifying every checksum.

    Args:
        uri: artifact directory (local path or fsspec URI).
        allow_pickle: permit a fully pickled PyTorch module (runs arbitrary code on load).
    """
    metadata = read_metadata(uri)
    local_dir = _localise(uri)
    verify_checksums(local_dir, metadata, uri)
    model_path = local_dir / metadata.model_file
    if metadata.framework == "pytorch":
        model = _load_torch(model_path, metadata, allow_pickle, uri)
    else:
        from ig_airflow.tf_backend import load_tf_model

        model = load_tf_model(model_path, metadata, uri)
    return LoadedArtifact(uri=str(uri), metadata=metadata, model=model, local_dir=local_dir)


def _load_torch(path: Path, metadata: ArtifactMetadata, allow_pickle: bool, uri: str) -> Any:
    import torch

    if metadata.loader == "pickle":
        if not allow_pickle:
            raise ArtifactError(
                f"{uri}: the model is a pickled module, which runs arbitrary code when loaded; "
                "set model.allow_pickle: true in the run config only if you trust its source"
            )
        model = torch.load(path, map_location="cpu", weights_only=False)
    elif metadata.loader == "torch_export":
        from ig_airflow.torch_export import load_exported

        model = load_exported(path, allow_pickle, uri)
    elif metadata.loader == "torchscript":
        model = torch.jit.load(str(path), map_location="cpu")
    else:
        cls = import_object(metadata.model_class or "")
        model = cls(**metadata.model_kwargs)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch raises several types here
            raise ArtifactError(f"{uri}: cannot load state_dict {path.name}: {exc}") from None
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ArtifactError(f"{uri}: state_dict does not fit {metadata.model_class}: {exc}") from None
    model.eval()
    return model


def save_artifact(
    model: Any,
    uri: str,
    *,
    inputs: InputSpec | dict[str, Any],
    output: OutputSpec | dict[str, Any] | None = None,
    calibration: Calibration | dict[str, Any] | None = None,
    baseline: BaselineSection | dict[str, Any] | None = None,
    loader: str | None = None,
    model_class: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
    custom_objects_module: str | None = None,
    extra: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> ArtifactMetadata:
    """Save ``model`` and its metadata as an artifact directory at ``uri``.

    The directory is built under a temporary name and renamed into place, so a crash never
    leaves a half-written artifact. PyTorch modules are saved as a state_dict by default
    (``model_class`` defaults to the module's own class); ``loader="torch_export"`` exports it
    with a dynamic batch dimension to a pickle-free ``.pt2`` archive (an ``ExportedProgram`` is
    saved as it is); ``loader="torchscript"`` scripts the model; ``loader="pickle"`` pickles the
    whole module (loads only with ``allow_pickle``).
    Keras models are saved as ``.keras`` (see :mod:`ig_airflow.tf_backend`).
    """
    spec = InputSpec.model_validate(inputs)
    staging = Path(tempfile.mkdtemp(prefix="ig_artifact_save_"))
    try:
        framework, loader, model_file, model_class = _write_model_file(
            model, staging, loader, model_class, spec
        )
        files = {
            p.name: (sha256_file(p) if p.is_file() else _sha256_dir(p)) for p in sorted(staging.iterdir())
        }
        metadata = ArtifactMetadata(
            framework=framework,
            loader=loader,
            model_file=model_file,
            model_class=model_class,
            model_kwargs=model_kwargs or {},
            custom_objects_module=custom_objects_module,
            inputs=spec,
            output=OutputSpec.model_validate(output or {}),
            calibration=Calibration.model_validate(calibration or {}),
            baseline=BaselineSection.model_validate(baseline or {}),
            files=files,
            created_at=dt.datetime.now(dt.UTC).isoformat(),
            extra=extra or {},
        )
        (staging / METADATA_FILE).write_text(
            json.dumps(metadata.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
        )
        _publish_dir(staging, uri, overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return metadata


def _write_model_file(
    model: Any, staging: Path, loader: str | None, model_class: str | None, spec: InputSpec
) -> tuple[str, str, str, str | None]:
    try:
        import torch
    except ImportError:  # pragma: no cover - TensorFlow-only install
        torch = None
    if torch is not None and isinstance(model, torch.export.ExportedProgram):
        if loader not in (None, "torch_export"):
            raise ArtifactError(f"an ExportedProgram is saved with loader 'torch_export', not {loader!r}")
        torch.export.save(model, staging / "model.pt2")
        return "pytorch", "torch_export", "model.pt2", None
    if torch is not None and isinstance(model, torch.nn.Module):
        loader = loader or "state_dict"
        if loader == "state_dict":
            model_class = model_class or f"{type(model).__module__}:{type(model).__qualname__}"
            torch.save(model.state_dict(), staging / "model.pt")
            return "pytorch", loader, "model.pt", model_class
        if loader == "torch_export":
            from ig_airflow.torch_export import export_model

            torch.export.save(export_model(model, spec), staging / "model.pt2")
            return "pytorch", loader, "model.pt2", None
        if loader == "torchscript":
            scripted = model
            if not isinstance(model, torch.jit.ScriptModule):
                try:
                    scripted = torch.jit.script(model)
                except Exception as exc:  # noqa: BLE001 - TorchScript raises many types
                    raise ArtifactError(
                        f"cannot script {type(model).__name__} ({type(exc).__name__}); "
                        "pass a torch.jit.trace()d module instead"
                    ) from None
            scripted.save(str(staging / "model.ts.pt"))
            return "pytorch", loader, "model.ts.pt", None
        if loader == "pickle":
            torch.save(model, staging / "model.pkl.pt")
            return "pytorch", loader, "model.pkl.pt", None
        raise ArtifactError(f"unknown PyTorch loader {loader!r}")
    from ig_airflow.tf_backend import write_tf_model

    loader, model_file = write_tf_model(model, staging, loader)
    return "tensorflow", loader, model_file, None


def _publish_dir(staging: Path, uri: str, overwrite: bool) -> None:
    fs, path = filesystem(uri)
    path = path.rstrip("/")
    if fs.exists(path) and not overwrite:
        raise ArtifactError(f"{uri} already exists; pass overwrite=True to replace it")
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
    if "file" in protocol or "local" in protocol:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staging, tmp)
        old = None
        if Path(path).exists():
            old = f"{path}.old-{uuid.uuid4().hex[:12]}"
            Path(path).rename(old)
        Path(tmp).rename(path)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    else:
        fs.put(str(staging) + "/", tmp, recursive=True)
        if fs.exists(path):
            fs.rm(path, recursive=True)
        fs.mv(tmp, path, recursive=True)
