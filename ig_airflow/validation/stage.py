"""Input validation with Great Expectations: decide, row by row, what may be explained.

Expectations are derived from the artifact's input spec (:mod:`ig_airflow.validation.suite`);
users add their own in ``validation.expectations``. GX runs them (ephemeral context by default, a file context
when ``validation.gx_project_root`` is set) and its validation result JSON and Data Docs HTML
are kept as run outputs.

Schema-level problems always fail the run: a missing column, an extra column when
``allow_extra_columns`` is false, a numeric column none of whose values is a number, fewer
rows than ``min_rows``. Row-level failures follow the policy of their column:

- ``fail``: stop the run with a report naming each expectation, column and count;
- ``skip``: move the row to ``quarantine/`` (original values, ``_row_number``,
  ``_quarantine_reason`` listing every failed expectation);
- ``map_to_default``: replace the value (categorical: ``defaults[feature]`` or ``<OOV>``;
  numeric: ``defaults[feature]``) and count it per feature and value. Ids, user expectations
  and numeric features without a default cannot be mapped: those rows are quarantined.

Every input row ends up in exactly one of ``validated/`` and ``quarantine/`` (Parquet datasets,
committed when complete); the stage checks ``input = validated + quarantined`` itself.

The input is streamed in batches of ``validation.batch_rows`` rows, one GX run and one part of
each output per batch, so the stage holds one batch at a time. Ids must be unique across the
whole input: the id columns alone are read up front, and an id repeated in another batch fails
the same expectation as one repeated within a batch. ``min_rows`` counts the whole input;
user expectations run per batch.
"""

from __future__ import annotations

import gc
import logging
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ig_airflow.config import RunConfig, ValidationSection
from ig_airflow.dataset import InputDataset, open_dataset
from ig_airflow.exceptions import ValidationFailed
from ig_airflow.io import AtomicDatasetWriter, filesystem, write_json
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
    first_row: int = 0,
    repeated_ids: pa.Array | None = None,
) -> ValidationOutcome:
    """Validate ``table`` against ``spec``; see the module docstring for the policies.
    ``first_row``: the table's first row number in the input (a batch of it);
    ``repeated_ids``: id keys (:func:`id_keys`) that occur more than once in the whole input."""
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
    if repeated_ids is not None and len(repeated_ids):
        _repeated_elsewhere(table, id_columns, repeated_ids, failures, expectations)
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
    validated, quarantine = _split(table, frame, quarantined, first_row)
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


def unique_id_reason(id_columns: list[str]) -> str:
    """The failure GX reports for a repeated id (as :func:`_failures` names it)."""
    if len(id_columns) == 1:
        return f"expect_column_values_to_be_unique({id_columns[0]})"
    return f"expect_compound_columns_to_be_unique({','.join(id_columns)})"


def id_keys(table: pa.Table, id_columns: list[str]) -> pa.Array:
    """One comparable key per row: the id, or the id columns joined (compound ids)."""
    if len(id_columns) == 1:
        return table.column(id_columns[0]).combine_chunks()
    parts = [pc.cast(table.column(c), pa.string()).combine_chunks() for c in id_columns]
    return pc.binary_join_element_wise(*parts, "\x1f")


def repeated_id_keys(dataset: InputDataset, id_columns: list[str]) -> pa.Array:
    """The id keys that occur more than once in the whole dataset (reads the id columns only)."""
    if not id_columns:
        return pa.array([])
    keys = id_keys(dataset.read_table(id_columns), id_columns)
    ordered = keys.take(pc.array_sort_indices(keys))  # sorted: a repeated key sits beside itself
    del keys
    same = pc.equal(ordered[1:], ordered[:-1])  # null beside null is null: dropped by the filter
    return pc.unique(ordered[1:].filter(same))


def _repeated_elsewhere(
    table: pa.Table,
    id_columns: list[str],
    repeated: pa.Array,
    failures: dict[int, list[Failure]],
    expectations: list[dict[str, Any]],
) -> None:
    """Fail the rows of this batch whose id occurs again in another batch, as GX fails ids
    repeated within the batch (the same reason, added to the same expectation's count)."""
    reason = unique_id_reason(id_columns)
    hits = pc.is_in(id_keys(table, id_columns), value_set=repeated).to_numpy(zero_copy_only=False)
    new = [int(r) for r in np.flatnonzero(hits) if all(f[0] != reason for f in failures.get(int(r), []))]
    if not new:
        return
    for row in new:
        failures[row].append((reason, ",".join(id_columns), "id"))
    entry = next((e for e in expectations if e["expectation"] == reason), None)
    if entry is None:
        expectations.append(
            {"expectation": reason, "column": ",".join(id_columns), "kind": "id", "unexpected_count": 0}
        )
        entry = expectations[-1]
    entry["unexpected_count"] = (entry["unexpected_count"] or 0) + len(new)


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
    table: pa.Table, frame: pd.DataFrame, quarantined: dict[int, list[str]], first_row: int = 0
) -> tuple[pa.Table, pa.Table]:
    """Validated rows (as cast and mapped) and quarantined rows (original values, row number,
    reasons); checks that every input row is in exactly one of them."""
    keep = np.ones(len(frame), dtype=bool)
    keep[list(quarantined)] = False
    validated = pa.Table.from_pandas(frame.loc[keep].reset_index(drop=True), preserve_index=False)
    positions = np.array(sorted(quarantined), dtype=np.int64)
    quarantine = table.take(pa.array(positions, type=pa.int64()))
    quarantine = quarantine.append_column(ROW_NUMBER_COLUMN, pa.array(positions + first_row, type=pa.int64()))
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
    dataset; ``partition`` selects partitions, see :mod:`ig_airflow.dataset`), streamed in
    batches of ``settings.batch_rows`` rows, and write under ``output_uri``: ``validated/``,
    ``quarantine/``, ``gx_result.json``, ``report.json`` and ``data_docs/``. On a ``fail``
    policy breach the report, GX result and docs are written and :class:`ValidationFailed` is
    raised. Returns the report (with output URIs)."""
    check_settings(settings, spec, id_columns)
    dataset = open_dataset(input_uri, partition)
    if dataset.num_rows < settings.min_rows:
        raise ValidationFailed(
            f"{input_uri}: {dataset.num_rows} rows, fewer than validation.min_rows={settings.min_rows}"
        )
    layout = ValidationLayout(output_uri)
    outputs = {
        "validated": layout.validated,
        "quarantine": layout.quarantine,
        "gx_result": layout.gx_result,
        "report": layout.report,
    }
    try:
        outcome = _validate_batches(dataset, spec, id_columns, settings, layout)
    except ValidationFailed as exc:
        if isinstance(exc.outcome, ValidationOutcome):  # keep the report, GX result and docs
            for stale in (layout.validated, layout.quarantine):
                fs, path = filesystem(stale)
                if fs.exists(path):
                    fs.rm(path, recursive=True)
            _write_outcome(exc.outcome, layout, outputs)
        raise
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


def _validate_batches(
    dataset: InputDataset,
    spec: InputSpec,
    id_columns: list[str],
    settings: ValidationSection,
    layout: ValidationLayout,
) -> ValidationOutcome:
    """Validate ``dataset`` batch by batch, writing each batch's validated and quarantined rows
    as the next part of each output; returns the merged outcome (without the rows)."""
    total, size = dataset.num_rows, settings.batch_rows
    starts = range(0, max(total, 1), size)  # an empty input: one empty batch
    repeated = repeated_id_keys(dataset, id_columns) if len(starts) > 1 else None
    per_batch = settings.model_copy(update={"min_rows": 0})  # counted on the whole input
    batches: list[tuple[int, int, ValidationOutcome]] = []
    with (
        AtomicDatasetWriter(layout.validated) as validated,
        AtomicDatasetWriter(layout.quarantine) as quarantine,
    ):
        for start in starts:
            stop = min(start + size, total)
            source = dataset.uri if len(starts) == 1 else f"{dataset.uri} (rows {start}-{stop})"
            rows = dataset.read_rows(start, stop)
            outcome = validate_table(rows, spec, id_columns, per_batch, source, start, repeated)
            validated.write(outcome.validated)
            quarantine.write(outcome.quarantine)
            written = pa.table({})  # the rows are written: keep only the counts and GX results
            batches.append((start, stop, replace(outcome, validated=written, quarantine=written)))
            if outcome.docs_dir is not None and len(batches) > 1:  # the first batch's Data Docs
                shutil.rmtree(outcome.docs_dir, ignore_errors=True)
            del rows, outcome
            gc.collect()  # GX leaves reference cycles that hold each batch's frame (measured)
    return merge_outcomes(dataset.uri, batches)


def merge_outcomes(source: str, batches: list[tuple[int, int, ValidationOutcome]]) -> ValidationOutcome:
    """One outcome from the batches' (row range, outcome): counts summed, expectations merged
    by name; the GX result of each batch under ``batches`` when there are several."""
    if len(batches) == 1:
        return batches[0][2]
    outcomes = [o for _, _, o in batches]
    rows: Counter = Counter()
    reasons: Counter = Counter()
    mapped: dict[str, Counter] = defaultdict(Counter)
    expectations: dict[str, dict[str, Any]] = {}
    for outcome in outcomes:
        rows.update(outcome.report["rows"])
        reasons.update(outcome.report.get("quarantine_reasons", {}))
        for column, counts in outcome.mapped.items():
            mapped[column].update(counts)
        for entry in outcome.report["failed_expectations"]:
            merged = expectations.setdefault(entry["expectation"], {**entry, "unexpected_count": 0})
            if entry["unexpected_count"] is None or merged["unexpected_count"] is None:
                merged["unexpected_count"] = None
            else:
                merged["unexpected_count"] += entry["unexpected_count"]
    report = {
        "source": source,
        "rows": dict(rows),
        "batches": len(batches),
        "failed_expectations": list(expectations.values()),
        "gx_success": all(o.report["gx_success"] for o in outcomes),
        "mapped": {col: dict(sorted(c.items())) for col, c in sorted(mapped.items())},
        "quarantine_reasons": dict(sorted(reasons.items())),
    }
    gx_result = {
        "success": report["gx_success"],
        "batches": [{"rows": [start, stop], **o.gx_result} for start, stop, o in batches],
    }
    empty = pa.table({})
    return ValidationOutcome(empty, empty, report, gx_result, outcomes[0].docs_dir, dict(mapped))


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
