"""Why did the model decide this? One row's explanation, looked up in a finished run.

Reads the run's ``manifest.json`` and attributions dataset (filtered by the row's ids, so a
large run is not loaded), the row's feature values from the run's input and the baseline from
the manifest, and returns the features ordered by the size of their attribution. A row that
validation quarantined is reported with its reasons instead::

    from ig_airflow import explain_prediction

    print(explain_prediction("demo_output/runs/explain/ds=2024-01-01", 1000042).to_text(top=5))
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa

from ig_airflow.dataset import open_dataset
from ig_airflow.exceptions import InputDataError
from ig_airflow.io import exists, read_json
from ig_airflow.layout import RunLayout, explained_input
from ig_airflow.results import (
    RANK_COLUMN,
    RESULT_COLUMNS,
    TARGET_COLUMN,
    TARGET_TYPES,
    attribution_column,
    attribution_features,
)


@dataclass
class PredictionExplanation:
    """One row of a run: explained (``contributions`` ordered by |attribution|) or quarantined."""

    run_uri: str
    ids: dict[str, Any]
    status: str  # "explained" | "quarantined"
    quarantine_reason: str | None = None
    quarantined_values: dict[str, Any] = field(default_factory=dict)  # the columns the reason names
    result: dict[str, Any] = field(default_factory=dict)
    contributions: pd.DataFrame = field(default_factory=pd.DataFrame)

    def to_dict(self, top: int | None = None) -> dict[str, Any]:
        contributions = self.contributions.head(top) if top else self.contributions
        return {
            "run_uri": self.run_uri,
            "ids": self.ids,
            "status": self.status,
            "quarantine_reason": self.quarantine_reason,
            "quarantined_values": self.quarantined_values,
            **self.result,
            "contributions": contributions.to_dict(orient="records"),
        }

    def to_text(self, top: int | None = None) -> str:
        key = ", ".join(f"{k}={v}" for k, v in self.ids.items())
        if self.status == "quarantined":
            values = ", ".join(f"{k}={v!r}" for k, v in self.quarantined_values.items())
            return f"{key}: not explained, quarantined by validation: {self.quarantine_reason} [{values}]"
        r = self.result
        state = "converged" if r["converged"] else "NOT converged (above the run's tolerance)"
        if "target" in r:
            key += f", target {r['target']} (rank {r['target_rank']})"
        lines = [
            f"{key}: prediction {r['prediction']:.4f} vs baseline {r['baseline_prediction']:.4f} "
            f"(change {r['prediction'] - r['baseline_prediction']:+.4f})",
            f"  completeness error {r['completeness_error']:.2%} after {r['n_steps']} steps, {state}",
            f"  {'feature':<24}{'value':>18}{'baseline':>18}{'attribution':>14}{'share':>8}",
        ]
        shown = self.contributions.head(top) if top else self.contributions
        for row in shown.itertuples(index=False):
            lines.append(
                f"  {row.feature:<24}{_short(row.value):>18}{_short(row.baseline):>18}"
                f"{row.attribution:>+14.4f}{row.share:>8.1%}"
            )
        rest = self.contributions.iloc[len(shown) :]
        if len(rest):
            lines.append(
                f"  ... {len(rest)} more features, attribution {rest['attribution'].sum():+.4f} together"
            )
        return "\n".join(lines)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return text if len(text) <= 16 else text[:15] + "~"


def row_key(values: list[str]) -> str | dict[str, str]:
    """A row's id as typed by a user: one ``VALUE``, or ``COLUMN=VALUE`` for every id column."""
    if len(values) == 1 and "=" not in values[0]:
        return values[0]
    pairs = [v.partition("=") for v in values]
    if not all(sep and column.strip() for column, sep, _ in pairs):
        raise InputDataError(f"row id {values}: give one VALUE, or COLUMN=VALUE for every id column")
    return {column.strip(): value.strip() for column, _, value in pairs}


def parse_row_id(text: str) -> str | dict[str, str]:
    """:func:`row_key` of one line of text: ``VALUE`` or ``COLUMN=VALUE, COLUMN=VALUE`` (split
    only at a comma followed by a column name and "=", so values may hold commas)."""
    if not re.match(r"\s*[A-Za-z_][\w.]*\s*=", text):
        return row_key([text.strip()])
    return row_key([part for part in re.split(r",\s*(?=[A-Za-z_][\w.]*\s*=)", text) if part.strip()])


def explain_prediction(run_uri: str, row: Any, target: str | None = None) -> PredictionExplanation:
    """Look up one row of the run at ``run_uri`` (the directory holding ``manifest.json``).

    Args:
        run_uri: the run's output directory (local path or fsspec URI).
        row: the row's id value, or ``{id_column: value}`` when the run has several id columns.
            Strings are converted to the id column's type (as typed on a command line).
        target: in a multi-target run, the target (class name or output column) to show;
            default: the row's first (the first listed, or its predicted class).
    """
    manifest_uri = RunLayout(run_uri).manifest
    if not exists(manifest_uri):
        raise InputDataError(f"{manifest_uri}: no such run manifest (is {run_uri} a finished run?)")
    manifest = read_json(manifest_uri)
    attributions_uri = manifest["outputs"]["attributions"]
    attributions = open_dataset(attributions_uri)
    schema = attributions.schema
    features = attribution_features(schema.names)
    id_columns = manifest.get("id_columns") or [
        n
        for n in schema.names[: schema.names.index(attribution_column(features[0]))]
        if n not in TARGET_TYPES
    ]
    ids = _typed_ids(row, id_columns, schema, attributions_uri)
    found = attributions.find({**ids, **_target_filter(schema, target, attributions_uri)})
    if found.num_rows == 0:
        return _quarantined_or_missing(run_uri, manifest, ids, attributions_uri)
    if found.num_rows > 1:
        raise InputDataError(f"{attributions_uri}: {found.num_rows} rows match {ids}; the ids are not unique")
    explained = found.to_pylist()[0]
    # the rows as explained: after validation's map_to_default, when the run validated
    dataset = open_dataset(*explained_input(manifest))
    inputs = dataset.find(ids, features).to_pylist()
    values = inputs[0] if inputs else {}
    baseline = manifest.get("baseline") or {}
    attributions = [explained[attribution_column(f)] for f in features]
    total = sum(abs(a) for a in attributions) or 1.0
    contributions = pd.DataFrame(
        {
            "feature": features,
            "value": [values.get(f) for f in features],
            "baseline": [baseline.get(f) for f in features],
            "attribution": attributions,
            "share": [abs(a) / total for a in attributions],
        }
    )
    order = contributions["attribution"].abs().sort_values(ascending=False, kind="stable").index
    return PredictionExplanation(
        run_uri=str(run_uri),
        ids=ids,
        status="explained",
        result={k: explained[k] for k in [*TARGET_TYPES, *RESULT_COLUMNS] if k in explained},
        contributions=contributions.loc[order].reset_index(drop=True),
    )


def _target_filter(schema: pa.Schema, target: str | None, uri: str) -> dict[str, Any]:
    """One target of a multi-target run: the one named, else the row's first."""
    if TARGET_COLUMN not in schema.names:
        if target is not None:
            raise InputDataError(f"{uri}: the run explains one output; it has no targets to choose from")
        return {}
    return {TARGET_COLUMN: str(target)} if target is not None else {RANK_COLUMN: 1}


def _typed_ids(row: Any, id_columns: list[str], schema: pa.Schema, uri: str) -> dict[str, Any]:
    if not isinstance(row, dict):
        if len(id_columns) != 1:
            raise InputDataError(f"{uri}: the run has id columns {id_columns}; give a value for each")
        row = {id_columns[0]: row}
    if set(row) != set(id_columns):
        raise InputDataError(f"{uri}: ids {sorted(row)} do not match the run's id columns {id_columns}")
    typed = {}
    for column, value in row.items():
        target = schema.field(column).type
        try:
            typed[column] = pa.scalar(value).cast(target).as_py()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
            raise InputDataError(f"{uri}: {column}={value!r} is not a valid {target}") from None
    return typed


def _quarantined_or_missing(
    run_uri: str, manifest: dict[str, Any], ids: dict[str, Any], attributions_uri: str
) -> PredictionExplanation:
    quarantine_uri = (manifest.get("validation") or {}).get("outputs", {}).get("quarantine") or RunLayout(
        run_uri
    ).validation.quarantine
    if exists(quarantine_uri):
        rows = open_dataset(quarantine_uri).find(ids).to_pylist()
        if rows:
            reason = str(rows[0].get("_quarantine_reason"))
            named = {c: v for c, v in rows[0].items() if f"({c})" in reason or f"({c}," in reason}
            return PredictionExplanation(
                run_uri=str(run_uri),
                ids=ids,
                status="quarantined",
                quarantine_reason=reason,
                quarantined_values=named,
            )
    raise InputDataError(f"{attributions_uri}: no row with {ids} (nor in the run's quarantine)")
