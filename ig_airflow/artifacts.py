"""Model artifacts: a directory holding the model file(s) and ``ig_artifact.json``.

The metadata (:mod:`ig_airflow.spec`) says which framework and loader read the model file, the
input spec, the output to explain, an optional calibration, a default baseline and the sha256
of every file. Loading verifies every checksum, then hands the file to the backend registered
for the artifact's framework (:mod:`ig_airflow.core.backend`); saving asks each backend whether
it owns the model object. PyTorch models are saved as a state_dict by default (loaded with
``weights_only=True``); ``torch.export`` archives, TorchScript and Keras files are accepted; a
fully pickled module loads only with ``allow_pickle=True``.

Publishing from a retraining job is one call::

    save_artifact(model, "s3://models/adult/v3", inputs=spec, model_kwargs={...})
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
import uuid
import weakref
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
from pydantic import ValidationError

from ig_airflow.config import BaselineSection
from ig_airflow.contract import check_examples, smoke_test, write_examples
from ig_airflow.core.backend import FrameworkBackend, backend_for_model, get_backend
from ig_airflow.exceptions import ArtifactError
from ig_airflow.io import filesystem, sha256_file, sha256_json
from ig_airflow.spec import METADATA_FILE, ArtifactMetadata, Calibration, InputSpec, OutputSpec
from ig_airflow.trust import trusting


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

    @property
    def backend(self) -> FrameworkBackend:
        """The backend of the artifact's framework."""
        return get_backend(self.metadata.framework)


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
        metadata = ArtifactMetadata.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ArtifactError(f"{uri}/{METADATA_FILE}: {problems}") from None
    for key, name in [("model_file", metadata.model_file), *(("files", n) for n in metadata.files)]:
        _require_inside(name, key, uri)
    loaders = get_backend(metadata.framework).loaders
    if metadata.loader not in loaders:
        raise ArtifactError(
            f"{uri}/{METADATA_FILE}: loader {metadata.loader!r} is not valid for framework "
            f"{metadata.framework!r} (one of {list(loaders)})"
        )
    return metadata


def _require_inside(name: str, key: str, uri: str) -> None:
    """A path named by the metadata must be relative and stay inside the artifact."""
    parts = PurePosixPath(name).parts
    if not name or name.startswith("/") or "\\" in name or ".." in parts or parts in ((), (".",)):
        raise ArtifactError(
            f"{uri}/{METADATA_FILE}: {key} {name!r} must be a relative path inside the artifact"
        )


def _localise(uri: str) -> tuple[Path, bool]:
    """A local directory with the artifact's files, and whether it is a temporary copy."""
    fs, path = filesystem(uri)
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    if "file" in protocol or "local" in protocol:
        return Path(path), False
    local = Path(tempfile.mkdtemp(prefix="ig_artifact_"))
    fs.get(path.rstrip("/") + "/", str(local), recursive=True)
    return local, True


def verify_checksums(local_dir: Path, metadata: ArtifactMetadata, uri: str) -> None:
    """Every file the metadata lists exists inside the artifact (symlinks resolved), matches its
    sha256, and, when it is a zip archive, has no duplicate or escaping entry names."""
    if metadata.model_file not in metadata.files:
        raise ArtifactError(f"{uri}: model file {metadata.model_file!r} has no checksum in metadata")
    root = local_dir.resolve()
    for name, expected in sorted(metadata.files.items()):
        file = local_dir / name
        if not file.exists():
            raise ArtifactError(f"{uri}: file {name!r} listed in {METADATA_FILE} is missing")
        members = [file, *file.rglob("*")] if file.is_dir() else [file]
        for member in members:
            if not member.resolve().is_relative_to(root):
                raise ArtifactError(f"{uri}: {name!r} resolves outside the artifact ({member} is a link out)")
        actual = sha256_file(file) if file.is_file() else _sha256_dir(file)
        if actual != expected:
            raise ArtifactError(
                f"{uri}: checksum mismatch for {name!r}: expected sha256 {expected}, got {actual}"
            )
        if file.is_file() and zipfile.is_zipfile(file):
            _check_zip(file, name, uri)


def _check_zip(path: Path, name: str, uri: str) -> None:
    """Refuse archives whose readers could disagree on a member (duplicate names: Python's
    zipfile reads the last, torch the first) or whose members escape (absolute, ``..``)."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ArtifactError(f"{uri}: archive {name!r} holds duplicate entries {duplicates[:3]}")
    escaping = [n for n in names if n.startswith("/") or "\\" in n or ".." in PurePosixPath(n).parts]
    if escaping:
        raise ArtifactError(f"{uri}: archive {name!r} holds entries outside it {escaping[:3]}")


def _sha256_dir(directory: Path) -> str:
    return sha256_json(
        {str(p.relative_to(directory)): sha256_file(p) for p in sorted(directory.rglob("*")) if p.is_file()}
    )


def load_artifact(uri: str, allow_pickle: bool = False) -> LoadedArtifact:
    """Load the artifact at ``uri`` after verifying every checksum; an artifact saved with
    example rows must still reproduce their predictions.

    Args:
        uri: artifact directory (local path or fsspec URI).
        allow_pickle: permit formats that run code when loaded or called: a pickled PyTorch
            module, pickled ``.pt2`` members, a TensorFlow SavedModel graph.
    """
    metadata = read_metadata(uri)
    local_dir, temporary = _localise(uri)
    try:
        verify_checksums(local_dir, metadata, uri)
        backend = get_backend(metadata.framework)
        model = backend.load(local_dir / metadata.model_file, metadata, allow_pickle, uri)
        check_examples(backend, model, metadata, local_dir, uri)  # the contract still holds
    except BaseException:
        if temporary:
            shutil.rmtree(local_dir, ignore_errors=True)
        raise
    loaded = LoadedArtifact(uri=str(uri), metadata=metadata, model=model, local_dir=local_dir)
    if temporary:  # the copy of a remote artifact lives as long as the loaded model may read it
        weakref.finalize(loaded, shutil.rmtree, str(local_dir), True)
    return loaded


def _spec_from_model(backend: FrameworkBackend, model: Any, spec: InputSpec) -> InputSpec:
    """The spec with what the model itself says filled in (a backend's optional ``complete_spec``:
    Keras StringLookup vocabularies, attribution layers)."""
    complete_spec = getattr(backend, "complete_spec", None)
    return complete_spec(model, spec) if complete_spec else spec


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
    example_rows: pd.DataFrame | None = None,
    example_predictions: Any = None,
    example_tolerance: float = 1e-4,
    extra: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> ArtifactMetadata:
    """Save ``model`` and its metadata at ``uri`` (built aside, renamed into place), after
    loading it back and checking the calling contract (:mod:`ig_airflow.contract`).

    ``loader``: PyTorch ``state_dict`` (default; ``model_kwargs`` keep their order),
    ``torch_export``, ``torchscript``, ``pickle``; Keras ``keras`` (default) or ``savedmodel``.
    ``example_rows`` (raw rows) and ``example_predictions`` (your own code's calibrated scores
    for them: ``[rows]`` of the explained output, or ``[rows, n_outputs]``) must be reproduced
    within ``example_tolerance`` (absolute and relative); re-checked on every load.
    """
    if (example_rows is None) != (example_predictions is None):
        raise ArtifactError("example_rows and example_predictions are given together")
    staging = Path(tempfile.mkdtemp(prefix="ig_artifact_save_"))
    try:
        backend = backend_for_model(model)
        spec = _spec_from_model(backend, model, InputSpec.model_validate(inputs))
        saved = backend.save(model, staging, spec, loader, model_class)
        examples = None
        if example_rows is not None:
            examples = write_examples(staging, spec, example_rows, example_predictions, example_tolerance)
        metadata = ArtifactMetadata(
            framework=backend.name,
            loader=saved.loader,
            model_file=saved.model_file,
            model_class=saved.model_class,
            model_kwargs=model_kwargs or {},
            custom_objects_module=custom_objects_module,
            inputs=spec,
            output=OutputSpec.model_validate(output or {}),
            calibration=Calibration.model_validate(calibration or {}),
            baseline=BaselineSection.model_validate(baseline) if baseline is not None else None,
            files=_file_checksums(staging),
            examples=examples,
            created_at=dt.datetime.now(dt.UTC).isoformat(),
            extra=extra or {},
        )
        # keys in their own order: model_kwargs must reach the class as the caller wrote them
        (staging / METADATA_FILE).write_text(json.dumps(metadata.model_dump(mode="json"), indent=2) + "\n")
        _check_round_trip(backend, staging, metadata, str(uri))
        _publish_dir(staging, uri, overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return metadata


def _file_checksums(directory: Path) -> dict[str, str]:
    return {p.name: (sha256_file(p) if p.is_file() else _sha256_dir(p)) for p in sorted(directory.iterdir())}


def _check_round_trip(backend: FrameworkBackend, staging: Path, metadata: ArtifactMetadata, uri: str) -> None:
    """Load the staged artifact as a run would and check the contract on it. The model's own
    modules are trusted here: the caller has imported them already."""
    modules = [(metadata.model_class or "").partition(":")[0], metadata.custom_objects_module or ""]
    with trusting(*modules):
        model = backend.load(staging / metadata.model_file, metadata, True, uri)
    smoke_test(backend, model, metadata, uri)
    check_examples(backend, model, metadata, staging, uri)


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
