"""Where a change in attributions comes from: the model or the data.

Let ``G(m, d)`` be a feature's global importance, the mean |attribution| of model ``m`` on data
``d`` (what drift compares; the signed mean is split the same way). The drift stage compares the
current run (model m2 on data d2) with its reference (m1 on d1): the total change is
``G22 - G11``. When the two runs' model versions differ, an extra IG pass
(:mod:`ig_airflow.quality.cross_terms`) explains a sample of d2's explained rows with m1 and a
sample of d1's with m2, each model with its own run's artifact, baseline and IG settings, and the
change splits symmetrically (the Shapley value of the two factors, model and data)::

    model part = 1/2 [(G22 - G12) + (G21 - G11)]      data part = 1/2 [(G22 - G21) + (G12 - G11)]

``G11`` and ``G22`` are the full runs' (what drift reports), so model part + data part = total by
construction. The cross terms come from the samples, paired: on a sampled row both models'
attributions are known (the run's own from its attributions dataset, the other model's from the
extra pass), so ``G22 - G12`` is the mean over d2's sampled rows of ``|a22| - |a12|`` and
``G21 - G11`` that of ``|a21| - |a11|`` over d1's (``G12 = G22 - mean(|a22| - |a12|)``: a
control-variate estimate whose sampling error is that of the two models' disagreement, not of
the rows' spread). With the same rows in both runs the data part is the sampling error of those
paired means alone (zero when the sample holds every row).

The 95% intervals of the parts and of the model's share come from a Poisson bootstrap over the
sampled rows (:mod:`.statistics`): the uncertainty of the cross terms (``G11`` and ``G22`` are
exact). The headline is the model's share of the change, ``sum_f |model_f| / (sum_f |model_f| +
sum_f |data_f|)`` over the features.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ig_airflow.analysis import statistics as st
from ig_airflow.config import DriftSection
from ig_airflow.io import write_parquet
from ig_airflow.layout import DriftLayout

METHOD = (
    "Shapley split of each feature's change in mean |attribution| between model and data: "
    "model = 1/2[(G22 - G12) + (G21 - G11)], data = 1/2[(G22 - G21) + (G12 - G11)]; G11, G22 from the "
    "full runs, the cross terms from paired samples re-explained by the other model"
)


class NoDecomposition(Exception):  # noqa: N818 - a reason, recorded in drift.json, not an error
    """Why the change cannot be decomposed (the reason is recorded, the drift stage goes on)."""


@dataclass
class PairedSample:
    """One run's sampled explained rows, explained by both models (rows x features): ``own`` by
    the run's own model (read from its attributions), ``other`` by the other run's model."""

    own: np.ndarray
    other: np.ndarray
    rows: int  # the run's explained rows, the sample's population

    @property
    def size(self) -> int:
        return len(self.own)


@dataclass
class CrossTerms:
    """The extra IG pass: the current run's sampled rows (own model m2, other m1) and the
    reference's (own m1, other m2), over ``features``."""

    features: list[str]
    current: PairedSample
    reference: PairedSample
    models: dict[str, str] = field(default_factory=dict)  # reference and current model versions
    seconds: float = 0.0


# (reference_uri, current_uri, features) -> the cross terms, or NoDecomposition with the reason
CrossTermsFn = Callable[[str, str, list[str]], CrossTerms]


@dataclass
class Split:
    """One quantity's split per feature (``G11``, ``G22``, the paired differences' means) with
    its bootstrap replicates of the model part (resamples x features)."""

    reference: np.ndarray  # G11
    current: np.ndarray  # G22
    on_current: np.ndarray  # mean over d2's sample of m2 - m1
    on_reference: np.ndarray  # mean over d1's sample of m2 - m1
    model_boot: np.ndarray

    @property
    def total(self) -> np.ndarray:
        return self.current - self.reference

    @property
    def model(self) -> np.ndarray:
        return 0.5 * (self.on_current + self.on_reference)

    @property
    def data(self) -> np.ndarray:
        return self.total - self.model

    @property
    def data_boot(self) -> np.ndarray:
        return self.total - self.model_boot


def split(
    reference: np.ndarray, current: np.ndarray, cross: CrossTerms, value: Callable, weights: tuple
) -> Split:
    """The split of ``value`` (``np.abs`` for importance, identity for the signed mean) given the
    full runs' means and the paired samples; ``weights``: bootstrap weights of the current's and
    the reference's sampled rows."""
    on_current = value(cross.current.own) - value(cross.current.other)
    on_reference = value(cross.reference.other) - value(cross.reference.own)
    boot = [
        st.resampled_means(w, d, np.ones(len(d)))
        for w, d in zip(weights, (on_current, on_reference), strict=True)
    ]
    return Split(reference, current, on_current.mean(axis=0), on_reference.mean(axis=0), 0.5 * sum(boot))


def model_share(model: np.ndarray, data: np.ndarray) -> np.ndarray:
    """The model's share of the change: its L1 norm over the features (last axis) over both parts'."""
    m, d = np.abs(model).sum(axis=-1), np.abs(data).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(m + d > 0, m / np.where(m + d > 0, m + d, 1.0), np.nan)


def decompose(
    frame: pd.DataFrame, cross: CrossTerms, resamples: int, seed: int
) -> tuple[dict[str, Any], pd.DataFrame]:
    """The decomposition of drift's per-feature ``frame`` (``reference_mean_abs``,
    ``current_mean_abs``; ``reference_mean``, ``current_mean`` for the signed split) with the
    cross terms: drift.json's entry and the per-feature table, largest change first."""
    by_feature = frame.set_index("feature").loc[cross.features]
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2)]
    weights = tuple(
        st.poisson_weights(rng, resamples, sample.size)
        for rng, sample in zip(rngs, (cross.current, cross.reference), strict=True)
    )
    importance = split(
        *(by_feature[f"{run}_mean_abs"].to_numpy(np.float64) for run in ("reference", "current")),
        cross,
        np.abs,
        weights,
    )
    signed = split(
        *(_column(by_feature, f"{run}_mean") for run in ("reference", "current")), cross, np.asarray, weights
    )
    table = decomposition_table(cross.features, importance, signed)
    share = float(model_share(importance.model, importance.data))
    low, high = st.interval(model_share(importance.model_boot, importance.data_boot))
    entry = {
        "available": True,
        "method": METHOD,
        "models": cross.models,
        "rows": {"reference": cross.reference.rows, "current": cross.current.rows},
        "sample_rows": {"reference": cross.reference.size, "current": cross.current.size},
        "resamples": resamples,
        "seed": seed,
        "model_share": share,
        "model_share_ci95": [float(low), float(high)],
        "data_share": 1.0 - share if math.isfinite(share) else None,
        "total_l1": float(np.abs(importance.total).sum()),
        "model_l1": float(np.abs(importance.model).sum()),
        "data_l1": float(np.abs(importance.data).sum()),
        "summary": headline(share, (float(low), float(high)), cross.models),
        "seconds": round(cross.seconds, 2),
        "features": table.to_dict(orient="records"),
    }
    return entry, table


def _column(frame: pd.DataFrame, name: str) -> np.ndarray:
    return frame[name].to_numpy(np.float64) if name in frame else np.full(len(frame), np.nan)


def decomposition_table(features: list[str], importance: Split, signed: Split) -> pd.DataFrame:
    """Per feature: the total change in mean |attribution|, its model and data parts with their
    95% intervals, the four importances behind them, and the signed mean's split."""
    model_low, model_high = st.interval(importance.model_boot)
    data_low, data_high = st.interval(importance.data_boot)
    table = pd.DataFrame(
        {
            "feature": features,
            "total": importance.total,
            "model": importance.model,
            "model_ci_low": model_low,
            "model_ci_high": model_high,
            "data": importance.data,
            "data_ci_low": data_low,
            "data_ci_high": data_high,
            "reference_mean_abs": importance.reference,
            "current_mean_abs": importance.current,
            "reference_model_on_current_rows": importance.current - importance.on_current,
            "current_model_on_reference_rows": importance.reference + importance.on_reference,
            "signed_total": signed.total,
            "signed_model": signed.model,
            "signed_data": signed.data,
        }
    )
    order = np.argsort(-(np.abs(table["model"]) + np.abs(table["data"])).to_numpy(), kind="stable")
    return table.iloc[order].reset_index(drop=True)


def headline(share: float, interval: tuple[float, float], models: dict[str, str]) -> str:
    """The sentence a report leads with: how much of the change the model makes."""
    if not math.isfinite(share):
        return "Nothing changed: the two runs' importances are the same."
    versions = ""
    if models.get("reference") and models.get("current"):
        versions = f" ({models['reference']} -> {models['current']})"
    return (
        f"{share:.0%} of the change in mean |attribution| is due to the model{versions} and "
        f"{1 - share:.0%} to the data (95% interval of the model's share: {interval[0]:.0%} to "
        f"{interval[1]:.0%})."
    )


def unavailable(reason: str) -> dict[str, Any]:
    """drift.json's entry when there is no decomposition, with the reason."""
    return {"available": False, "reason": reason}


def decompose_change(
    frame: pd.DataFrame,
    reference_uri: str,
    current_uri: str,
    cross_terms: CrossTermsFn | None,
    settings: DriftSection,
    output_uri: str,
) -> dict[str, Any]:
    """drift.json's ``decomposition`` entry (and ``drift_decomposition.parquet`` under
    ``output_uri``): the split of the change in ``frame`` (drift's per-feature table) when
    ``cross_terms`` can explain each run's sample with the other's model, else the reason not."""
    if not settings.decomposition.enabled:
        return unavailable("drift.decomposition.enabled is false")
    if cross_terms is None:
        return unavailable("no extra IG pass was given (the pipeline's drift stage runs one)")
    try:
        cross = cross_terms(reference_uri, current_uri, list(frame["feature"]))
    except NoDecomposition as why:
        return unavailable(str(why))
    entry, table = decompose(frame, cross, settings.resamples, settings.decomposition.seed)
    uri = DriftLayout(output_uri).decomposition
    write_parquet(uri, pa.Table.from_pandas(table, preserve_index=False))
    return {**entry, "table": uri}
