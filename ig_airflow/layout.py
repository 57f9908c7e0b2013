"""Every path inside a run folder, in one place: callers ask ``layout.attributions`` or
``layout.summary.feature``, never join strings.

::

    <run>/attributions/              the IG output table (ig_airflow.results) as a Parquet dataset:
                                     part-NNNNN.parquet, one per shard, and _SUCCESS
    <run>/manifest.json              hashes, counts, completeness, timing
    <run>/shards/                    part-NNNNN.json, each shard's record; part-NNNNN.parquet,
                                     a shard written but not yet committed
    <run>/validation/                validated/ and quarantine/ (Parquet datasets), gx_result.json,
                                     report.json, data_docs/index.html
    <run>/summary/                   feature_, category_, layer_summary.parquet, summary.json
    <run>/drift/                     drift.json, drift_features.parquet
                                     drift_decomposition.parquet (model vs data)
    <run>/quality/                   quality.json: faithfulness and sanity checks on a sample
    <run>/report/                    report.html and its images
    <run>/.ig_airflow_lease.json     the lease of the process writing the run now

The validation folder moves where ``validation.output_uri`` says. Each stage's folder has its
own layout class, so a stage called on a bare folder (``summarise_run(..., "out/summary")``)
names its files the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ig_airflow.config import RunConfig
from ig_airflow.exceptions import ConfigError
from ig_airflow.io import AtomicDatasetWriter, join_uri


@dataclass(frozen=True)
class _Folder:
    root: str

    def _at(self, *parts: str) -> str:
        return join_uri(self.root, *parts)


class ValidationLayout(_Folder):
    """The files the validation stage writes."""

    @property
    def validated(self) -> str:
        """The rows to explain, as cast and mapped (a Parquet dataset folder)."""
        return self._at("validated")

    @property
    def quarantine(self) -> str:
        """The rows not explained, with their reasons (a Parquet dataset folder)."""
        return self._at("quarantine")

    @property
    def gx_result(self) -> str:
        return self._at("gx_result.json")

    @property
    def report(self) -> str:
        return self._at("report.json")

    @property
    def data_docs(self) -> str:
        return self._at("data_docs")

    @property
    def data_docs_index(self) -> str:
        return self._at("data_docs", "index.html")


class SummaryLayout(_Folder):
    """The files the aggregation stage writes."""

    def table(self, kind: str) -> str:
        """``kind``: ``feature``, ``category`` or ``layer``."""
        return self._at(f"{kind}_summary.parquet")

    @property
    def json(self) -> str:
        return self._at("summary.json")


class DriftLayout(_Folder):
    """The files the drift stage writes."""

    @property
    def json(self) -> str:
        return self._at("drift.json")

    @property
    def features(self) -> str:
        return self._at("drift_features.parquet")

    @property
    def decomposition(self) -> str:
        """Per feature, the change split into the model's and the data's parts."""
        return self._at("drift_decomposition.parquet")


class QualityLayout(_Folder):
    """The quality stage's results (:mod:`ig_airflow.quality`)."""

    @property
    def json(self) -> str:
        return self._at("quality.json")


class ReportLayout(_Folder):
    """The HTML report and its images."""

    @property
    def html(self) -> str:
        return self._at("report.html")

    def image(self, name: str) -> str:
        return self._at(name)


@dataclass(frozen=True)
class RunLayout(_Folder):
    """The files of one run under ``root`` (a local path or fsspec URI)."""

    validation_root: str | None = None

    @classmethod
    def of(cls, config: RunConfig) -> RunLayout:
        """The layout of the run that ``config`` writes."""
        return cls(config.output.uri, config.validation.output_uri)

    @staticmethod
    def under(root: str, folder: str) -> str:
        """The run folder ``folder`` (relative, '/'-separated) under ``root``; it cannot leave it."""
        parts = [p for p in folder.strip("/").split("/") if p]
        if not parts or any(p in (".", "..") for p in parts) or folder.startswith("/"):
            raise ConfigError(f"output.run_folder {folder!r} must be a relative path inside output.uri")
        return join_uri(root, *parts)

    @property
    def attributions(self) -> str:
        """The attributions dataset (a folder of ``part-NNNNN.parquet`` files)."""
        return self._at("attributions")

    def attribution_part(self, index: int) -> str:
        """Shard ``index``'s file in the committed attributions dataset."""
        return self._at("attributions", AtomicDatasetWriter.part_name(index))

    @property
    def manifest(self) -> str:
        return self._at("manifest.json")

    @property
    def lease(self) -> str:
        """Who is writing this run folder now (:mod:`ig_airflow.lease`)."""
        return self._at(".ig_airflow_lease.json")

    @property
    def shards(self) -> str:
        return self._at("shards")

    def shard_rows(self, index: int) -> str:
        """A shard's explained rows, as written by its worker, until the run commits them."""
        return self._at("shards", AtomicDatasetWriter.part_name(index))

    def shard_record(self, index: int) -> str:
        """A shard's record: the hashes it was computed under, its counts and completeness."""
        return self._at("shards", f"part-{index:05d}.json")

    @property
    def validation(self) -> ValidationLayout:
        """The validation stage's folder (``validation.output_uri`` when set)."""
        return ValidationLayout(self.validation_root or self._at("validation"))

    @property
    def summary(self) -> SummaryLayout:
        return SummaryLayout(self._at("summary"))

    @property
    def drift(self) -> DriftLayout:
        return DriftLayout(self._at("drift"))

    @property
    def quality(self) -> QualityLayout:
        return QualityLayout(self._at("quality"))

    @property
    def report(self) -> ReportLayout:
        return ReportLayout(self._at("report"))


def explained_input(manifest: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """The rows a run explained, from its manifest: the validated rows (after validation's
    ``map_to_default``) when the run validated, else its input with the partition it read."""
    validated = (manifest.get("validation") or {}).get("outputs", {}).get("validated")
    if validated:
        return validated, {}
    return manifest["input_uri"], (manifest.get("input") or {}).get("partition", {})
