"""The run manifest (``manifest.json``) and the completeness summary it carries, for the
in-process and the Ray runner alike."""

from __future__ import annotations

import logging
import os
import platform
import sys
import time
from typing import Any, TextIO

import numpy as np

from ig_airflow.config import RunConfig
from ig_airflow.core.adaptive import RowAttributions
from ig_airflow.dataset import InputDataset
from ig_airflow.identity import run_identity
from ig_airflow.layout import RunLayout
from ig_airflow.spec import ArtifactMetadata

log = logging.getLogger(__name__)


class CompletenessStats:
    """Running summary of completeness over batches (mean, max, counts). ``unconverged_rows``
    missed ``atol + tolerance * |change|`` (did not converge); ``barely_moved_rows`` met it only
    through ``atol``: their prediction barely moved from the baseline, so their relative error
    (``completeness_error``) means nothing."""

    def __init__(self) -> None:
        self.errors: list[np.ndarray] = []
        self.unconverged = 0
        self.barely_moved = 0
        self.gradient_evaluations = 0

    def add(self, result: RowAttributions) -> None:
        self.errors.append(result.completeness_error)
        self.unconverged += int((~result.converged).sum())
        if result.barely_moved is not None:
            self.barely_moved += int(result.barely_moved.sum())
        self.gradient_evaluations += result.gradient_evaluations

    def _errors(self) -> np.ndarray:
        return np.concatenate(self.errors) if self.errors else np.zeros(0)

    def summary(self) -> dict[str, Any]:
        """Exact summary of every row seen."""
        errors = self._errors()
        if not len(errors):
            return {"rows": 0, "unconverged_rows": 0, "barely_moved_rows": 0, "gradient_evaluations": 0}
        return {
            "rows": int(len(errors)),
            "mean_error": float(errors.mean()),
            "p95_error": float(np.quantile(errors, 0.95)),
            "max_error": float(errors.max()),
            "unconverged_rows": self.unconverged,
            "barely_moved_rows": self.barely_moved,
            "gradient_evaluations": self.gradient_evaluations,
        }

    def mergeable(self) -> dict[str, Any]:
        """Per-shard summary that merges exactly (sum, max) or as a bound (p95); see :func:`merge`."""
        errors = self._errors()
        return {
            "rows": int(len(errors)),
            "error_sum": float(errors.sum()),
            "max_error": float(errors.max()) if len(errors) else 0.0,
            "p95_error": float(np.quantile(errors, 0.95)) if len(errors) else 0.0,
            "unconverged_rows": self.unconverged,
            "barely_moved_rows": self.barely_moved,
            "gradient_evaluations": self.gradient_evaluations,
        }


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One completeness summary from per-shard ones (:meth:`CompletenessStats.mergeable`)."""
    rows = sum(p["rows"] for p in parts)
    return {
        "rows": rows,
        "mean_error": sum(p["error_sum"] for p in parts) / rows if rows else 0.0,
        "max_error": max((p["max_error"] for p in parts), default=0.0),
        "p95_error_max_over_shards": max((p["p95_error"] for p in parts), default=0.0),
        "unconverged_rows": sum(p["unconverged_rows"] for p in parts),
        "barely_moved_rows": sum(p.get("barely_moved_rows", 0) for p in parts),  # absent in older shards
        "gradient_evaluations": sum(p["gradient_evaluations"] for p in parts),
    }


def explain_manifest(
    config: RunConfig,
    metadata: ArtifactMetadata,
    *,
    artifact_uri: str,
    rows: int,
    baseline: dict[str, Any] | None,
    completeness: dict[str, Any],
    seconds: float,
    **extra: Any,
) -> dict[str, Any]:
    """The IG stage's manifest: what was explained, with which model and settings, how well."""
    return {
        "stage": "explain",
        "run": run_identity(config, metadata).to_dict(),
        "config_hash": config.config_hash(),
        "artifact": {
            "uri": artifact_uri,
            "checksum": metadata.checksum(),
            "files": metadata.files,
            "framework": metadata.framework,
            "loader": metadata.loader,
        },
        "input_uri": config.data.input_uri,
        "outputs": {"attributions": RunLayout.of(config).attributions},
        "id_columns": config.data.id_columns,
        "rows": {"explained": rows},
        "baseline": baseline,
        "ig": config.ig.model_dump(mode="json"),
        "completeness": completeness,
        "timing": {
            "seconds": round(seconds, 3),
            "rows_per_second": round(rows / seconds, 1) if seconds else None,
        },
        "versions": versions(),
        **extra,
    }


def shards_manifest(
    config: RunConfig,
    metadata: ArtifactMetadata,
    dataset: InputDataset,
    records: list[dict[str, Any]],
    *,
    computed: int,
    seconds: float,
    runner: str,
    **extra: Any,
) -> dict[str, Any]:
    """The manifest of a run explained shard by shard (``records``: every shard's, in order)."""
    layout = RunLayout.of(config)
    manifest = explain_manifest(
        config,
        metadata,
        artifact_uri=config.model.uri,
        rows=dataset.num_rows,
        baseline=records[0].get("baseline") if records else None,
        baseline_source=records[0].get("baseline_source") if records else None,
        loss=records[0].get("loss") if records else None,
        completeness=merge([r["completeness"] for r in records]),
        seconds=seconds,
        runner=runner,
        input_sha256=records[0]["input_sha256"] if records else dataset.fingerprint(),
        shards={"total": len(records), "skipped": len(records) - computed, "computed": computed},
        **extra,
    )
    manifest["outputs"]["shards"] = layout.shards
    manifest["input"] = dataset.describe()
    return manifest


def versions() -> dict[str, str]:
    import ig_airflow

    return {"ig_airflow": ig_airflow.__version__, "python": platform.python_version()}


class Progress:
    """How far a stage is: a progress bar on a terminal (``[#####-----] 45% 7330/16281 rows,
    2700 rows/s, 3 s left``), log lines otherwise (``explained 4096/16281 rows (5311 rows/s, about
    2 s left)``), e.g. in Airflow task logs. ``IG_AIRFLOW_PROGRESS=log`` forces log lines.

    Args:
        total_rows: rows to process.
        template: the log message, with ``{done}`` for how far (default: rows done of the total).
        stream: where the bar is drawn (default: standard error, when it is a terminal).
    """

    WIDTH = 30

    def __init__(self, total_rows: int, template: str, stream: TextIO | None = None):
        self.total, self.template = total_rows, template
        self.rows = 0
        self.started = time.perf_counter()
        self.stream = stream or sys.stderr
        self.bar = self.stream.isatty() and os.environ.get("IG_AIRFLOW_PROGRESS", "auto") != "log"

    def advance(self, rows: int, done: str | None = None) -> None:
        """``rows`` more rows finished."""
        self.rows += rows
        elapsed = time.perf_counter() - self.started
        rate = self.rows / elapsed if elapsed else float("nan")
        left = (self.total - self.rows) / rate if rate else float("nan")
        if not self.bar:
            message = self.template.format(done=done or f"{self.rows}/{self.total}")
            log.info("%s (%.0f rows/s, about %.0f s left)", message, rate, left)
            return
        share = min(self.rows / self.total, 1.0) if self.total else 1.0
        filled = int(share * self.WIDTH)
        line = (
            f"\r[{'#' * filled}{'-' * (self.WIDTH - filled)}] {share:4.0%} {self.rows}/{self.total} rows, "
            f"{rate:.0f} rows/s, {max(left, 0):.0f} s left"
        )
        self.stream.write(line + ("\n" if self.rows >= self.total else ""))
        self.stream.flush()
