"""The expectation suite, derived from the artifact's input spec (no hand-written suite):
numeric features not null and finite (and within ``min``/``max`` when the spec sets them),
categorical features not null and within the vocabulary, id columns not null and unique, plus
the user's own ``validation.expectations``. Each expectation carries ``meta.ig_column`` and
``meta.ig_kind`` (schema, id, feature, user) so failures map back to a column and a policy."""

from __future__ import annotations

from typing import Any

import numpy as np

from ig_airflow.config import ValidationSection
from ig_airflow.exceptions import ConfigError
from ig_airflow.spec import OOV_TOKEN, InputSpec

FLOAT_MAX = float(np.finfo(np.float64).max)


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
        policy = settings.feature_policies.get(feature.name, settings.policy)
        if default is None and policy == "map_to_default" and feature.oov_index is None:
            raise ConfigError(
                f"validation.defaults.{feature.name}: the model has no out-of-vocabulary index for "
                "this feature, so map_to_default needs a default value (or use skip)"
            )


def _camel(name: str) -> str:
    return name if not name.startswith("expect_") else "".join(p.title() for p in name.split("_"))


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
            value_set=[*feat.vocabulary, *([OOV_TOKEN] if feat.oov_index is not None else [])],
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
