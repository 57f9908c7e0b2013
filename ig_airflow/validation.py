"""Input validation with Great Expectations: decide, row by row, what may be explained.

Expectations are derived from the artifact's input spec (no hand-written suite): numeric
features not null and finite (and within ``min``/``max`` when the spec sets them), categorical
features not null and within the vocabulary, id columns not null and unique; users add their
own in ``validation.expectations``. GX runs them (ephemeral context by default, a file context
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
import os
import re
import shutil
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ig_airflow.artifacts import OOV_TOKEN, InputSpec
from ig_airflow.config import RunConfig, ValidationSection
from ig_airflow.exceptions import ConfigError, ValidationFailed
from ig_airflow.io import filesystem, join_uri, read_parquet, write_json, write_parquet

log = logging.getLogger(__name__)

FLOAT_MAX = float(np.finfo(np.float64).max)
VALIDATED_FILE = "validated.parquet"
REASON_COLUMN = "_quarantine_reason"
ROW_NUMBER_COLUMN = "_row_number"


@dataclass
class ValidationOutcome:
    """Result of :func:`validate_table`."""

    validated: pa.Table
    quarantine: pa.Table
    report: dict[str, Any]
    gx_result: dict[str, Any]
    docs_dir: Path | None = None
    mapped: dict[str, Counter] = field(default_factory=dict)


def _camel(name: str) -> str:
    return name if not name.startswith("expect_") else "".join(p.title() for p in name.split("_"))


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _policy(settings: ValidationSection, column: str | None) -> str:
    return settings.feature_policies.get(column, settings.policy) if column else settings.policy


def check_settings(settings: ValidationSection, spec: InputSpec, id_columns: list[str]) -> None:
    """Reject policies that name unknown features or cannot be carried out."""
    known = set(spec.feature_names) | set(id_columns)
    for key in ("feature_policies", "defaults"):
        unknown = sorted(set(getattr(settings, key)) - known)
        if unknown:
            raise ConfigError(f"validation.{key}: unknown feature(s) {unknown}")
    for feature in spec.numeric:
        explicit = settings.feature_policies.get(feature.name) == "map_to_default"
        if explicit and feature.name not in settings.defaults:
            raise ConfigError(
                f"validation.defaults.{feature.name}: a numeric feature under map_to_default needs a default"
            )
    for feature in spec.categorical:
        default = settings.defaults.get(feature.name)
        if default is not None and str(default) not in feature.index_map():
            raise ConfigError(f"validation.defaults.{feature.name}: {default!r} is not in the vocabulary")


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


def build_suite(spec: InputSpec, id_columns: list[str], settings: ValidationSection) -> list[Any]:
    """The GX expectations for ``spec``: each carries ``meta.ig_column`` and ``meta.ig_kind``."""
    import great_expectations as gx

    expectations: list[Any] = []

    def add(cls: Any, target: str | None, kind: str, **kwargs: Any) -> None:
        expectations.append(cls(**kwargs, meta={"ig_column": target, "ig_kind": kind}))

    E = gx.expectations
    for column in id_columns:
        add(E.ExpectColumnToExist, column, "schema", column=column)
        add(E.ExpectColumnValuesToNotBeNull, column, "id", column=column)
    if len(id_columns) == 1:
        add(E.ExpectColumnValuesToBeUnique, id_columns[0], "id", column=id_columns[0])
    elif id_columns:
        add(E.ExpectCompoundColumnsToBeUnique, ",".join(id_columns), "id", column_list=id_columns)
    for feat in spec.numeric:
        add(E.ExpectColumnToExist, feat.name, "schema", column=feat.name)
        add(E.ExpectColumnValuesToNotBeNull, feat.name, "feature", column=feat.name)
        add(
            E.ExpectColumnValuesToBeBetween,
            feat.name,
            "feature",
            column=feat.name,
            min_value=feat.min if feat.min is not None else -FLOAT_MAX,
            max_value=feat.max if feat.max is not None else FLOAT_MAX,
        )
    for feat in spec.categorical:
        add(E.ExpectColumnToExist, feat.name, "schema", column=feat.name)
        add(E.ExpectColumnValuesToNotBeNull, feat.name, "feature", column=feat.name)
        add(
            E.ExpectColumnValuesToBeInSet,
            feat.name,
            "feature",
            column=feat.name,
            value_set=[*feat.vocabulary, OOV_TOKEN],
        )
    for i, item in enumerate(settings.expectations):
        name = item.get("type")
        cls = getattr(E, _camel(str(name)), None) if name else None
        if cls is None:
            raise ConfigError(f"validation.expectations[{i}].type: unknown GX expectation {name!r}")
        kwargs = dict(item.get("kwargs", {}))
        try:
            add(cls, kwargs.get("column"), "user", **kwargs)
        except Exception as exc:  # noqa: BLE001 - GX raises pydantic and its own errors
            raise ConfigError(f"validation.expectations[{i}]: {exc}") from None
    return expectations


def _run_gx(
    frame: pd.DataFrame, expectations: list[Any], settings: ValidationSection
) -> tuple[Any, Path | None]:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx

    if settings.gx_project_root:
        context = gx.get_context(mode="file", project_root_dir=settings.gx_project_root)
    else:
        context = gx.get_context(mode="ephemeral")
    _quiet_progress_bars(context)
    docs_dir = Path(tempfile.mkdtemp(prefix="ig_gx_docs_")) if settings.data_docs else None
    actions = []
    if docs_dir is not None:
        site = f"ig_airflow_{docs_dir.name}"
        context.add_data_docs_site(
            site_name=site,
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
        actions.append(gx.checkpoint.UpdateDataDocsAction(name="ig_airflow_data_docs", site_names=[site]))
    name = f"ig_airflow_{next(tempfile._get_candidate_names())}"  # unique within a file context
    source = context.data_sources.add_pandas(name)
    batch = source.add_dataframe_asset("rows").add_batch_definition_whole_dataframe("all_rows")
    suite = context.suites.add(gx.ExpectationSuite(name=f"{name}_suite", expectations=expectations))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=name, data=batch, suite=suite)
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=name,
            validation_definitions=[definition],
            actions=actions,
            result_format={"result_format": "COMPLETE"},
        )
    )
    result = checkpoint.run(batch_parameters={"dataframe": frame})
    return next(iter(result.run_results.values())), docs_dir


def _quiet_progress_bars(context: Any) -> None:
    try:
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context.variables.progress_bars = ProgressBarsConfig(globally=False)
    except Exception:  # noqa: BLE001 - cosmetic only
        pass


def validate_table(
    table: pa.Table,
    spec: InputSpec,
    id_columns: list[str],
    settings: ValidationSection,
    source: str = "<input>",
) -> ValidationOutcome:
    """Validate ``table`` against ``spec``; see the module docstring for the policies."""
    check_settings(settings, spec, id_columns)
    frame = table.to_pandas()
    frame.index = pd.RangeIndex(len(frame))
    _schema_checks(frame, spec, id_columns, settings, source)
    cast_failures = _cast_numeric(frame, spec, source)
    n_rows = len(frame)
    if n_rows == 0:
        log.warning("%s: input has 0 rows; writing empty validated and quarantine files", source)

    gx_result, docs_dir = _run_gx(frame, build_suite(spec, id_columns, settings), settings)
    failures: dict[int, list[tuple[str, str | None, str]]] = defaultdict(
        list
    )  # row -> (reason, column, kind)
    expectation_report = []
    table_level_failures = []
    for column, bad in cast_failures.items():
        reason = f"expect_column_values_to_be_castable_to_float64({column})"
        for row in np.flatnonzero(bad):
            failures[int(row)].append((reason, column, "feature"))
        expectation_report.append(
            {"expectation": reason, "column": column, "kind": "feature", "unexpected_count": int(bad.sum())}
        )
    for res in gx_result.results:
        cfg = res.expectation_config
        meta = cfg.meta or {}
        column, kind = meta.get("ig_column"), meta.get("ig_kind", "user")
        reason = f"{cfg.type}({column})" if column else cfg.type
        rows = (res.result or {}).get("unexpected_index_list")
        count = (res.result or {}).get("unexpected_count")
        if res.success:
            continue
        if rows is None:
            table_level_failures.append(reason)
            expectation_report.append(
                {"expectation": reason, "column": column, "kind": kind, "unexpected_count": count}
            )
            continue
        positions = [int(r) if not isinstance(r, dict) else int(r.get("index", -1)) for r in rows]
        for row in positions:
            failures[row].append((reason, column, kind))
        expectation_report.append(
            {"expectation": reason, "column": column, "kind": kind, "unexpected_count": len(positions)}
        )

    numeric = set(spec.numeric_names)

    def row_policy(column: str | None, kind: str) -> str:
        """Ids, user expectations and numeric features without a default cannot be mapped, so
        map_to_default quarantines them."""
        policy = _policy(settings, column)
        unmappable = kind in ("id", "user") or (column in numeric and column not in settings.defaults)
        return "skip" if policy == "map_to_default" and unmappable else policy

    failed_fail = [e for e in expectation_report if row_policy(e["column"], e["kind"]) == "fail"]
    report: dict[str, Any] = {
        "source": source,
        "rows": {"input": n_rows},
        "failed_expectations": expectation_report,
        "gx_success": bool(gx_result.success),
    }
    if table_level_failures or failed_fail:
        details = [f"{e['expectation']}: {e['unexpected_count']} row(s)" for e in failed_fail]
        details += [f"{name}: table-level expectation failed" for name in table_level_failures]
        report["failure"] = details
        outcome = ValidationOutcome(
            validated=pa.table({}),
            quarantine=pa.table({}),
            report=report,
            gx_result=gx_result.to_json_dict(),
            docs_dir=docs_dir,
        )
        raise ValidationFailed(
            f"{source}: validation failed (policy fail):\n  " + "\n  ".join(details), outcome
        )

    quarantined: dict[int, list[str]] = {}
    mapped: dict[str, Counter] = defaultdict(Counter)
    for row, items in sorted(failures.items()):
        if any(row_policy(column, kind) == "skip" for _, column, kind in items):
            quarantined[row] = sorted({reason for reason, _, _ in items})
            continue
        for column in sorted({column for _, column, _ in items}):  # every failure maps to a default
            original = table.column(column)[row].as_py()
            mapped[column]["<null>" if original is None else str(original)] += 1
            frame.at[row, column] = _default_for(spec, settings, column)

    keep = np.ones(n_rows, dtype=bool)
    keep[list(quarantined)] = False
    validated = pa.Table.from_pandas(frame.loc[keep].reset_index(drop=True), preserve_index=False)
    positions = np.array(sorted(quarantined), dtype=np.int64)
    quarantine = table.take(pa.array(positions, type=pa.int64()))
    quarantine = quarantine.append_column(ROW_NUMBER_COLUMN, pa.array(positions, type=pa.int64()))
    quarantine = quarantine.append_column(
        REASON_COLUMN, pa.array(["; ".join(quarantined[int(p)]) for p in positions], type=pa.string())
    )
    if validated.num_rows + quarantine.num_rows != n_rows:
        raise RuntimeError(
            f"row accounting broken: {n_rows} input != {validated.num_rows} validated "
            f"+ {quarantine.num_rows} quarantined"
        )
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


def _default_for(spec: InputSpec, settings: ValidationSection, column: str) -> Any:
    if column in spec.categorical_names:
        return str(settings.defaults.get(column, OOV_TOKEN))
    return float(settings.defaults[column])


def validate_inputs(
    input_uri: str, spec: InputSpec, id_columns: list[str], settings: ValidationSection, output_uri: str
) -> dict[str, Any]:
    """Validate the Parquet file at ``input_uri`` and write under ``output_uri``:
    ``validated.parquet``, ``quarantine.parquet``, ``gx_result.json``, ``report.json`` and
    ``data_docs/``. On a ``fail`` policy breach the report, GX result and docs are written and
    :class:`ValidationFailed` is raised. Returns the report (with output URIs)."""
    table = read_parquet(input_uri)
    outputs = {
        "validated": join_uri(output_uri, VALIDATED_FILE),
        "quarantine": join_uri(output_uri, "quarantine.parquet"),
        "gx_result": join_uri(output_uri, "gx_result.json"),
        "report": join_uri(output_uri, "report.json"),
    }
    try:
        outcome = validate_table(table, spec, id_columns, settings, source=input_uri)
    except ValidationFailed as exc:
        failed = exc.outcome
        if isinstance(failed, ValidationOutcome):  # keep the report, GX result and docs
            for stale in ("validated", "quarantine"):
                fs, path = filesystem(outputs[stale])
                if fs.exists(path):
                    fs.rm(path)
            _write_docs(failed.docs_dir, output_uri, outputs)
            write_json(outputs["gx_result"], failed.gx_result)
            write_json(outputs["report"], {**failed.report, "outputs": outputs})
        raise
    write_parquet(outputs["validated"], outcome.validated)
    write_parquet(outputs["quarantine"], outcome.quarantine)
    _write_docs(outcome.docs_dir, output_uri, outputs)
    write_json(outputs["gx_result"], outcome.gx_result)
    report = {**outcome.report, "outputs": outputs}
    write_json(outputs["report"], report)
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


def _write_docs(docs_dir: Path | None, output_uri: str, outputs: dict[str, str]) -> None:
    if docs_dir is None:
        return
    target = join_uri(output_uri, "data_docs")
    fs, path = filesystem(target)
    if fs.exists(path):
        fs.rm(path, recursive=True)
    fs.put(str(docs_dir) + "/", path, recursive=True)
    shutil.rmtree(docs_dir, ignore_errors=True)
    outputs["data_docs"] = join_uri(target, "index.html")


def validation_output_uri(config: RunConfig) -> str:
    return config.validation.output_uri or join_uri(config.output.uri, "validation")


def validated_uri(config: RunConfig) -> str:
    """Where the validation stage writes the rows that may be explained."""
    return join_uri(validation_output_uri(config), VALIDATED_FILE)


def run_validation(config: RunConfig, spec: InputSpec | None = None) -> dict[str, Any]:
    """Validate ``config.data.input_uri`` against the artifact's input spec (read from its
    metadata; the model itself is not loaded)."""
    from ig_airflow.artifacts import read_metadata

    spec = spec or read_metadata(config.model.uri).inputs
    return validate_inputs(
        config.data.input_uri, spec, config.data.id_columns, config.validation, validation_output_uri(config)
    )
