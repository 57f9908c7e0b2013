"""Input validation with Great Expectations: decide, row by row, what may be explained.

Expectations are derived from the artifact's input spec (:mod:`ig_airflow.validation.suite`);
users add their own in ``validation.expectations``. GX runs them (ephemeral context by default, a file context
when ``validation.gx_project_root`` is set) and its validation result JSON and Data Docs HTML
are kept as run outputs.

Schema-level problems always fail the run: a missing column, an extra column when
``allow_extra_columns`` is false, a numeric column none of whose values is a number, fewer
rows than ``min_rows``. Row-level failures follow the policy of their column:

- ``fail``: stop the run with a report naming each expectation, column and count;
- ``skip``: move the row to ``quarantine.parquet`` (original values, ``_row_number``,
  ``_quarantine_reason`` listing every failed expectation);
- ``map_to_default``: replace the value (categorical: ``defaults[feature]`` or ``<OOV>``;
  numeric: ``defaults[feature]``) and count it per feature and value. Ids, user expectations
  and numeric features without a default cannot be mapped: those rows are quarantined.

Every input row ends up in exactly one of ``validated.parquet`` and ``quarantine.parquet``;
the stage checks ``input = validated + quarantined`` itself.
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ig_airflow.config import RunConfig, ValidationSection
from ig_airflow.dataset import open_dataset
from ig_airflow.exceptions import ValidationFailed
from ig_airflow.io import filesystem, write_json, write_parquet
from ig_airflow.layout import RunLayout, ValidationLayout
from ig_airflow.lease import run_lease
from ig_airflow.spec import OOV_TOKEN, InputSpec
from ig_airflow.validation.gx_run import quiet_gx, run_gx
from ig_airflow.validation.suite import build_suite, check_settings

log = logging.getLogger(__name__)

REASON_COLUMN = "_quarantine_reason"
ROW_NUMBER_COLUMN = "_row_number"
Failure = tuple[str, str | None, str]  # (reason, column, kind)
NULLABLE_INTEGERS = {  # Arrow integer -> pandas nullable integer: a null never turns ids into floats
    pa.int8(): pd.Int8Dtype(),
    pa.int16(): pd.Int16Dtype(),
    pa.int32(): pd.Int32Dtype(),
    pa.int64(): pd.Int64Dtype(),
    pa.uint8(): pd.UInt8Dtype(),
    pa.uint16(): pd.UInt16Dtype(),
    pa.uint32(): pd.UInt32Dtype(),
    pa.uint64(): pd.UInt64Dtype(),
}


@dataclass
class ValidationOutcome:
    """Result of :func:`validate_table`."""

    validated: pa.Table
    quarantine: pa.Table
    report: dict[str, Any]
    gx_result: dict[str, Any]
    docs_dir: Path | None = None
    mapped: dict[str, Counter] = field(default_factory=dict)


def _schema_checks(
    frame: pd.DataFrame, spec: InputSpec, id_columns: list[str], settings: ValidationSection, source: str
) -> None:
    missing = [c for c in id_columns + spec.feature_names if c not in frame.columns]
    if missing:
        raise ValidationFailed(
            f"{source}: missing column(s) {missing} (schema failure, always fails the run)"
        )
    extra = [c for c in frame.columns if c not in set(id_columns + spec.feature_names)]
    if extra and not settings.allow_extra_columns:
        raise ValidationFailed(
            f"{source}: unexpected column(s) {extra} (validation.allow_extra_columns is false)"
        )
    if extra:
        log.warning("%s: extra column(s) %s pass through unchanged", source, extra)
    if len(frame) < settings.min_rows:
        raise ValidationFailed(
            f"{source}: {len(frame)} rows, fewer than validation.min_rows={settings.min_rows}"
        )


def _cast_numeric(frame: pd.DataFrame, spec: InputSpec, source: str) -> dict[str, np.ndarray]:
    """Cast numeric features to float64 in place; returns per-column masks of values that are
    present but not numbers (row-level failures). A column with no number at all fails."""
    failures: dict[str, np.ndarray] = {}
    for feat in spec.numeric:
        raw = frame[feat.name]
        if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
            frame[feat.name] = raw.astype(np.float64)
            continue
        cast = pd.to_numeric(raw, errors="coerce").astype(np.float64)
        bad = (raw.notna() & cast.isna()).to_numpy()
        present = int(raw.notna().sum())
        if present and bad.sum() == present:
            raise ValidationFailed(
                f"{source}: column {feat.name!r} has dtype {raw.dtype} and none of its {present} values "
                "is a number (schema failure, always fails the run)"
            )
        if bad.any():
            failures[feat.name] = bad
        frame[feat.name] = cast
    for feat in spec.categorical:
        column = frame[feat.name]
        frame[feat.name] = (
            column.astype(object).where(column.notna(), None).map(lambda v: v if v is None else str(v))
        )
    return failures


def validate_table(
    table: pa.Table,
    spec: InputSpec,
    id_columns: list[str],
    settings: ValidationSection,
    source: str = "<input>",
) -> ValidationOutcome:
    """Validate ``table`` against ``spec``; see the module docstring for the policies."""
    check_settings(settings, spec, id_columns)
    frame = table.to_pandas(types_mapper=NULLABLE_INTEGERS.get)  # ids with nulls stay exact integers
    frame.index = pd.RangeIndex(len(frame))
    _schema_checks(frame, spec, id_columns, settings, source)
    cast_failures = _cast_numeric(frame, spec, source)
    if len(frame) == 0:
        log.warning("%s: input has 0 rows; writing empty validated and quarantine files", source)
    with quiet_gx():
        gx_result, docs_dir = run_gx(frame, build_suite(spec, id_columns, settings), settings)
    failures, expectations, table_level = _failures(gx_result, cast_failures)
    policy = RowPolicy(settings, spec)
    report: dict[str, Any] = {
        "source": source,
        "rows": {"input": len(frame)},
        "failed_expectations": expectations,
        "gx_success": bool(gx_result.success),
    }
    failed = [e for e in expectations if policy(e["column"], e["kind"]) == "fail"]
    if table_level or failed:
        details = [f"{e['expectation']}: {e['unexpected_count']} row(s)" for e in failed]
        details += [f"{name}: table-level expectation failed" for name in table_level]
        report["failure"] = details
        outcome = ValidationOutcome(pa.table({}), pa.table({}), report, gx_result.to_json_dict(), docs_dir)
        raise ValidationFailed(
            f"{source}: validation failed (policy fail):\n  " + "\n  ".join(details), outcome
        )
    quarantined, mapped = _apply_policies(failures, policy, table, frame, spec, settings)
    validated, quarantine = _split(table, frame, quarantined)
    report["rows"].update(
        {
            "validated": validated.num_rows,
            "quarantined": quarantine.num_rows,
            "mapped_to_default": int(sum(sum(c.values()) for c in mapped.values())),
        }
    )
    report["mapped"] = {col: dict(sorted(c.items())) for col, c in sorted(mapped.items())}
    report["quarantine_reasons"] = dict(sorted(Counter(r for rs in quarantined.values() for r in rs).items()))
    return ValidationOutcome(validated, quarantine, report, gx_result.to_json_dict(), docs_dir, dict(mapped))


def _failures(
    gx_result: Any, cast_failures: dict[str, np.ndarray]
) -> tuple[dict[int, list[Failure]], list[dict[str, Any]], list[str]]:
    """Failures per row, one report entry per failed expectation, and table-level failures."""
    failures: dict[int, list[Failure]] = defaultdict(list)
    expectations, table_level = [], []
    for column, bad in cast_failures.items():
        reason = f"expect_column_values_to_be_castable_to_float64({column})"
        for row in np.flatnonzero(bad):
            failures[int(row)].append((reason, column, "feature"))
        expectations.append(
            {"expectation": reason, "column": column, "kind": "feature", "unexpected_count": int(bad.sum())}
        )
    for res in gx_result.results:
        if res.success:
            continue
        meta = res.expectation_config.meta or {}
        column, kind = meta.get("ig_column"), meta.get("ig_kind", "user")
        reason = f"{res.expectation_config.type}({column})" if column else res.expectation_config.type
        rows = (res.result or {}).get("unexpected_index_list")
        count = (res.result or {}).get("unexpected_count")
        if rows is None:
            table_level.append(reason)
        else:
            positions = [int(r) if not isinstance(r, dict) else int(r.get("index", -1)) for r in rows]
            for row in positions:
                failures[row].append((reason, column, kind))
            count = len(positions)
        expectations.append(
            {"expectation": reason, "column": column, "kind": kind, "unexpected_count": count}
        )
    return failures, expectations, table_level


class RowPolicy:
    """The policy of a failure: ``validation.feature_policies`` or ``validation.policy``. Ids,
    user expectations and numeric features without a default cannot be mapped, so
    ``map_to_default`` quarantines them."""

    def __init__(self, settings: ValidationSection, spec: InputSpec):
        self.settings, self.numeric = settings, set(spec.numeric_names)

    def __call__(self, column: str | None, kind: str) -> str:
        settings = self.settings
        policy = settings.feature_policies.get(column, settings.policy) if column else settings.policy
        unmappable = kind in ("id", "user") or (column in self.numeric and column not in settings.defaults)
        return "skip" if policy == "map_to_default" and unmappable else policy


def _apply_policies(
    failures: dict[int, list[Failure]],
    policy: RowPolicy,
    table: pa.Table,
    frame: pd.DataFrame,
    spec: InputSpec,
    settings: ValidationSection,
) -> tuple[dict[int, list[str]], dict[str, Counter]]:
    """Quarantine rows with a ``skip`` failure (row -> reasons); map the others' failed values
    to their defaults in ``frame`` (column -> original value -> count)."""
    quarantined: dict[int, list[str]] = {}
    mapped: dict[str, Counter] = defaultdict(Counter)
    for row, items in sorted(failures.items()):
        if any(policy(column, kind) == "skip" for _, column, kind in items):
            quarantined[row] = sorted({reason for reason, _, _ in items})
            continue
        for column in sorted({column for _, column, _ in items}):  # every failure maps to a default
            original = table.column(column)[row].as_py()
            mapped[column]["<null>" if original is None else str(original)] += 1
            frame.at[row, column] = _default_for(spec, settings, column)
    return quarantined, mapped


def _split(
    table: pa.Table, frame: pd.DataFrame, quarantined: dict[int, list[str]]
) -> tuple[pa.Table, pa.Table]:
    """Validated rows (as cast and mapped) and quarantined rows (original values, row number,
    reasons); checks that every input row is in exactly one of them."""
    keep = np.ones(len(frame), dtype=bool)
    keep[list(quarantined)] = False
    validated = pa.Table.from_pandas(frame.loc[keep].reset_index(drop=True), preserve_index=False)
    positions = np.array(sorted(quarantined), dtype=np.int64)
    quarantine = table.take(pa.array(positions, type=pa.int64()))
    quarantine = quarantine.append_column(ROW_NUMBER_COLUMN, pa.array(positions, type=pa.int64()))
    quarantine = quarantine.append_column(
        REASON_COLUMN, pa.array(["; ".join(quarantined[int(p)]) for p in positions], type=pa.string())
    )
    if validated.num_rows + quarantine.num_rows != len(frame):
        raise RuntimeError(
            f"row accounting broken: {len(frame)} input != {validated.num_rows} validated "
            f"+ {quarantine.num_rows} quarantined"
        )
    return validated, quarantine


def _default_for(spec: InputSpec, settings: ValidationSection, column: str) -> Any:
    if column in spec.categorical_names:
        return str(settings.defaults.get(column, OOV_TOKEN))
    return float(settings.defaults[column])


def validate_inputs(
    input_uri: str,
    spec: InputSpec,
    id_columns: list[str],
    settings: ValidationSection,
    output_uri: str,
    partition: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Validate the input dataset at ``input_uri`` (a file, directory, glob or Hive-partitioned
    dataset; ``partition`` selects partitions, see :mod:`ig_airflow.dataset`) and write under ``output_uri``:
    ``validated.parquet``, ``quarantine.parquet``, ``gx_result.json``, ``report.json`` and
    ``data_docs/``. On a ``fail`` policy breach the report, GX result and docs are written and
    :class:`ValidationFailed` is raised. Returns the report (with output URIs)."""
    table = open_dataset(input_uri, partition).read_table()
    layout = ValidationLayout(output_uri)
    outputs = {
        "validated": layout.validated,
        "quarantine": layout.quarantine,
        "gx_result": layout.gx_result,
        "report": layout.report,
    }
    try:
        outcome = validate_table(table, spec, id_columns, settings, source=input_uri)
    except ValidationFailed as exc:
        failed = exc.outcome
        if isinstance(failed, ValidationOutcome):  # keep the report, GX result and docs
            for stale in (layout.validated, layout.quarantine):
                fs, path = filesystem(stale)
                if fs.exists(path):
                    fs.rm(path)
            _write_outcome(failed, layout, outputs)
        raise
    write_parquet(layout.validated, outcome.validated)
    write_parquet(layout.quarantine, outcome.quarantine)
    report = _write_outcome(outcome, layout, outputs)
    rows = report["rows"]
    log.info(
        "validated %s: %d input = %d validated + %d quarantined (%d values mapped to defaults)",
        input_uri,
        rows["input"],
        rows["validated"],
        rows["quarantined"],
        rows["mapped_to_default"],
    )
    return report


def _write_outcome(
    outcome: ValidationOutcome, layout: ValidationLayout, outputs: dict[str, str]
) -> dict[str, Any]:
    """Publish the Data Docs, the GX result and the report (with its outputs); returns the report."""
    if outcome.docs_dir is not None:
        fs, path = filesystem(layout.data_docs)
        if fs.exists(path):
            fs.rm(path, recursive=True)
        fs.put(str(outcome.docs_dir) + "/", path, recursive=True)
        shutil.rmtree(outcome.docs_dir, ignore_errors=True)
        outputs["data_docs"] = layout.data_docs_index
    write_json(layout.gx_result, outcome.gx_result)
    report = {**outcome.report, "outputs": outputs}
    write_json(layout.report, report)
    return report


def run_validation(config: RunConfig, spec: InputSpec | None = None) -> dict[str, Any]:
    """Validate ``config.data.input_uri`` against the artifact's input spec (read from its
    metadata; the model itself is not loaded)."""
    from ig_airflow.artifacts import read_metadata

    spec = spec or read_metadata(config.model.uri).inputs
    layout = RunLayout.of(config)
    with run_lease(layout):
        return validate_inputs(
            config.data.input_uri,
            spec,
            config.data.id_columns,
            config.validation,
            layout.validation.root,
            config.data.partition,
        )
