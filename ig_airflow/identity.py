"""Run identity: which data partition, which model version, which run.

Every entry point (the operators, the CLI, :func:`ig_airflow.pipeline.run_pipeline`) calls
:func:`resolve_run` first. It names the run (:class:`RunIdentity`: the data partition, the
model version = the first 12 hex digits of the artifact's checksum, and the run id), places it
in its own folder when ``output.run_folder`` asks for one, and refuses a folder that already
holds another run (another model version or run id): a run never overwrites another, whatever
the config. Re-running the same run (an Airflow retry, the same CLI command) resumes it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ig_airflow.artifacts import read_metadata
from ig_airflow.config import RunConfig
from ig_airflow.exceptions import ConfigError, InputDataError, StorageError
from ig_airflow.io import exists, filesystem, read_json
from ig_airflow.layout import RunLayout
from ig_airflow.spec import ArtifactMetadata

UNSAFE = re.compile(r"[^A-Za-z0-9._=-]")
EXAMPLE_RUN_FOLDER = "'ds={{ ds }}/model={model_version}/run={run_id}'"


@dataclass(frozen=True)
class RunIdentity:
    """What a run is: its data partition, model version and run id."""

    partition: str
    model_version: str
    run_id: str

    def to_dict(self) -> dict[str, str]:
        return {"partition": self.partition, "model_version": self.model_version, "run_id": self.run_id}


def path_part(value: str) -> str:
    """A value made safe as one folder name (Airflow run ids hold ':' and '+')."""
    safe = UNSAFE.sub("_", value).strip(".") or "_"
    return safe[:120]


def partition_name(values: Mapping[str, object]) -> str:
    """A data partition as a run names it: ``ds=2024-05-01`` (keys in order, '/' between)."""
    return "/".join(f"{k}={v}" for k, v in values.items())


def run_identity(config: RunConfig, metadata: ArtifactMetadata | None = None) -> RunIdentity:
    """The identity of the run ``config`` describes (reads the artifact's metadata, not the model)."""
    partition = config.output.partition or partition_name(config.data.partition) or "all"
    version = (metadata or read_metadata(config.model.uri)).checksum()[:12]
    return RunIdentity(partition=partition, model_version=version, run_id=config.output.run_id)


def resolve_run(config: RunConfig) -> RunConfig:
    """``config`` with ``output.uri`` the run's own folder (``output.run_folder`` filled in),
    after checking that no other run has written there. Idempotent."""
    if config.unresolved_placeholders("output"):
        return config  # a config still being written (Airflow parses before it renders)
    identity = run_identity(config)
    pinned = {"partition": identity.partition}  # kept when the IG stage reads the validated rows
    if config.output.run_folder:
        try:
            folder = config.output.run_folder.format(
                partition=identity.partition,
                model_version=identity.model_version,
                run_id=path_part(identity.run_id),
            )
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                f"output.run_folder {config.output.run_folder!r}: unknown placeholder {exc}; "
                "use {partition}, {model_version} and {run_id}"
            ) from None
        pinned.update(uri=RunLayout.under(config.output.uri, folder), run_folder=None)
    config = config.model_copy(update={"output": config.output.model_copy(update=pinned)})
    refuse_other_run(RunLayout.of(config), identity)
    return config


def refuse_other_run(layout: RunLayout, identity: RunIdentity) -> None:
    """Raise :class:`StorageError` when the folder holds a finished run of another identity."""
    if not exists(layout.manifest):
        return
    recorded: dict[str, Any] = (read_json(layout.manifest) or {}).get("run") or {}
    theirs = (recorded.get("model_version"), recorded.get("run_id"))
    if recorded and theirs != (identity.model_version, identity.run_id):
        raise StorageError(
            f"{layout.root} holds run {recorded.get('run_id')!r} of model version "
            f"{recorded.get('model_version')}; this is run {identity.run_id!r} of model version "
            f"{identity.model_version}. A run never overwrites another: give each run its own folder "
            "with output.run_folder, e.g. " + EXAMPLE_RUN_FOLDER
        )


def find_runs(root: str) -> list[dict[str, Any]]:
    """Every finished run under ``root`` (a folder of run folders): its identity, folder and when
    its manifest was written, oldest first."""
    fs, path = filesystem(root)
    if not fs.exists(path):
        raise InputDataError(f"{root}: no such folder")
    found = []
    for manifest in fs.glob(f"{path.rstrip('/')}/**/manifest.json"):
        record = read_json(fs.unstrip_protocol(manifest) if "://" in root else manifest) or {}
        folder = manifest.rpartition("/")[0]
        found.append(
            {**(record.get("run") or {}), "uri": folder, "written": fs.modified(manifest).isoformat()}
        )
    return sorted(found, key=lambda r: (r["written"], r["uri"]))
