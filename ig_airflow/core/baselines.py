"""IG baselines: zero, mean, median (from a reference Parquet) and manual values.

Numeric baselines are values in the input space; categorical baselines are embedding
indices (the out-of-vocabulary row, the most frequent category, or a named value), so the
embedding-layer attribution integrates from that category's vector.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from ig_airflow.config import BaselineSection
from ig_airflow.core.calling import NO_CATEGORY
from ig_airflow.dataset import open_dataset
from ig_airflow.exceptions import ConfigError
from ig_airflow.spec import OOV_TOKEN, CategoricalFeature, InputSpec


@dataclass(frozen=True)
class Baseline:
    """A resolved baseline row."""

    numeric: np.ndarray  # float64 [n_numeric]
    categorical: np.ndarray  # int64 [n_categorical]
    values: dict[str, float | str] = field(default_factory=dict)  # feature -> human value
    source: str = "configured"  # where its settings came from (manifests say it)


def choose_baseline(
    configured: BaselineSection | None, artifact_default: BaselineSection | None, has_reference: bool
) -> tuple[BaselineSection, str]:
    """The baseline settings of a run and where they come from: the run's own, else the
    artifact's, else the reference data's median and most frequent values when the run has
    reference data, else zero and out-of-vocabulary."""
    if configured is not None:
        return configured, "run config"
    if artifact_default is not None:
        return artifact_default, "artifact"
    if has_reference:
        return BaselineSection(
            numeric="median", categorical="most_frequent"
        ), "reference data (median, most frequent)"
    return BaselineSection(), "default (zero, out-of-vocabulary)"


def check_value_features(spec: InputSpec, values: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` naming ``baseline.values`` features the model does not have."""
    unknown = sorted(set(values) - set(spec.feature_names))
    if unknown:
        raise ConfigError(f"baseline.values: unknown feature(s) {unknown}; features: {spec.feature_names}")


def numeric_value(name: str, value: Any) -> float:
    """A numeric feature's ``baseline.values`` entry as a float; raises unless it is a number."""
    if not isinstance(value, int | float):
        raise ConfigError(f"baseline.values.{name}: numeric feature needs a number")
    return float(value)


def categorical_baseline(
    spec: InputSpec, feat: CategoricalFeature, config: BaselineSection, reference: Any
) -> tuple[str, int]:
    """A categorical feature's baseline value and model index (``config.values`` first)."""
    mapping = feat.index_map()
    if feat.name in config.values:
        value = str(config.values[feat.name])
    elif config.categorical == "manual":
        raise ConfigError(f"baseline.values.{feat.name}: required when baseline.categorical is manual")
    elif config.categorical == "most_frequent":
        counts = pd.Series(reference[feat.name].to_pandas()).astype("object")
        counts = counts[counts.isin(feat.vocabulary)].value_counts()
        value = str(counts.index[0]) if len(counts) else OOV_TOKEN
    else:
        value = OOV_TOKEN
    if value == OOV_TOKEN and feat.oov_index is None:
        if spec.calling != "dense":
            raise ConfigError(
                f"baseline: categorical feature {feat.name!r} has no out-of-vocabulary index; set "
                "baseline.categorical: most_frequent (with reference data) or baseline.values"
            )
        return value, NO_CATEGORY  # every one-hot column of the feature at zero
    if value not in mapping:
        raise ConfigError(f"baseline.values.{feat.name}: {value!r} is not in the vocabulary")
    return value, mapping[value]


def resolve_baseline(
    spec: InputSpec, config: BaselineSection, reference_uri: str | None = None, source: str = "configured"
) -> Baseline:
    """Compute the baseline row for ``spec`` under ``config``."""
    check_value_features(spec, config.values)
    needs_reference = config.numeric in ("mean", "median") or config.categorical == "most_frequent"
    reference = None
    if needs_reference:
        if not reference_uri:
            raise ConfigError(
                f"baseline: numeric={config.numeric!r}, categorical={config.categorical!r} need "
                "data.reference_uri (a Parquet of reference rows)"
            )
        columns = (spec.numeric_names if config.numeric in ("mean", "median") else []) + (
            spec.categorical_names if config.categorical == "most_frequent" else []
        )
        reference = open_dataset(reference_uri).read_table(columns=columns)

    numeric = np.zeros(len(spec.numeric), dtype=np.float64)
    values: dict[str, float | str] = {}
    for j, feat in enumerate(spec.numeric):
        if feat.name in config.values:
            numeric[j] = numeric_value(feat.name, config.values[feat.name])
        elif config.numeric == "manual":
            raise ConfigError(f"baseline.values.{feat.name}: required when baseline.numeric is manual")
        elif config.numeric in ("mean", "median"):
            column = pc.cast(reference[feat.name], "float64").to_numpy(zero_copy_only=False)
            column = column[np.isfinite(column)]
            numeric[j] = float(np.mean(column) if config.numeric == "mean" else np.median(column))
        values[feat.name] = float(numeric[j])

    categorical = np.zeros(len(spec.categorical), dtype=np.int64)
    for j, feat in enumerate(spec.categorical):
        values[feat.name], categorical[j] = categorical_baseline(spec, feat, config, reference)
    return Baseline(numeric=numeric, categorical=categorical, values=values, source=source)
