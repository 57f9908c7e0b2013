"""The extra IG pass of the drift stage's model/data decomposition
(:mod:`ig_airflow.analysis.decomposition`): a sample of each run's explained rows explained again
with the other run's model, in this process (no Ray: ``drift.decomposition.sample_rows`` rows a
run). It sits beside the quality stage, which re-runs IG on a sample of a run's rows the same way.

Each model keeps its own run's artifact, baseline and IG settings. The current run's model is
built from its run config (as the quality stage does); the reference's from the reference run's
manifest: its artifact, loaded only through :func:`ig_airflow.artifacts.load_artifact` (with the
current config's ``model.allow_pickle``), whose checksum must still be the manifest's; its IG
settings; and its baseline row, which must reproduce the baseline prediction the manifest
recorded. Each model must also reproduce its own run's recorded predictions on the sampled rows.
Whatever stands in the way (a run without a manifest, one model version on both sides, an
artifact gone or changed, rows lacking the other model's features) is a reason recorded in
drift.json (:class:`NoDecomposition`), never a failed drift stage.
"""

from __future__ import annotations

import logging
import numbers
import time
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import ValidationError

from ig_airflow.analysis.aggregation import open_attributions, primary_rows
from ig_airflow.analysis.cohorts import explained_inputs
from ig_airflow.analysis.cohorts import run_manifest as find_run_manifest
from ig_airflow.analysis.decomposition import CrossTerms, NoDecomposition, PairedSample
from ig_airflow.artifacts import LoadedArtifact, load_artifact
from ig_airflow.config import BaselineSection, DecompositionSection, IGSection, RunConfig
from ig_airflow.core.baselines import Baseline, resolve_baseline
from ig_airflow.core.encoding import encode_rows
from ig_airflow.core.outputs import target_columns, target_setting
from ig_airflow.exceptions import IGAirflowError
from ig_airflow.results import RANK_COLUMN, attribution_column
from ig_airflow.run.explainer import BatchExplainer, build_explainer

log = logging.getLogger(__name__)
CHUNK_ROWS = 4096  # sampled rows attributed at a time
PREDICTION_TOLERANCE = 1e-3  # a model must reproduce its own run's predictions (same artifact)
EXPECTED_ERRORS = (IGAirflowError, OSError, pa.ArrowException)
EXTRA_OUTPUTS = {"layer_attributions": [], "loss": None}  # IG settings that only add output columns: off


def run_manifest(uri: str) -> tuple[str, dict[str, Any]]:
    """The run folder of ``uri`` (a run folder or its ``attributions/``) and its manifest."""
    found = find_run_manifest(uri)
    if found is None:
        raise NoDecomposition(f"{uri} has no run manifest: which model and rows it explained is unknown")
    return found


def model_version(manifest: dict[str, Any]) -> str:
    """The run's model version (the first 12 hex digits of its artifact's checksum)."""
    version = (manifest.get("run") or {}).get("model_version")
    return str(version or (manifest.get("artifact") or {}).get("checksum", "")[:12])


def manifest_explainer(manifest: dict[str, Any], allow_pickle: bool) -> BatchExplainer:
    """The explainer of a run's model as its manifest records it: artifact, IG settings, baseline."""
    record = manifest.get("artifact") or {}
    uri = record.get("uri")
    if not uri:
        raise NoDecomposition("the reference run's manifest names no model artifact")
    try:
        artifact = load_artifact(uri, allow_pickle=allow_pickle)
    except EXPECTED_ERRORS as error:
        raise NoDecomposition(f"the reference run's model {uri} cannot be loaded: {error}") from None
    if artifact.checksum != record.get("checksum"):
        raise NoDecomposition(f"the reference run's model {uri} changed since the run (checksum differs)")
    try:
        recorded_ig = manifest.get("ig") or {}
        extra_outputs = {k: v for k, v in EXTRA_OUTPUTS.items() if k in recorded_ig}
        settings = IGSection.model_validate({**recorded_ig, **extra_outputs})
    except ValidationError as error:
        raise NoDecomposition(f"the reference run's IG settings cannot be read: {error}") from None
    explainer = BatchExplainer(artifact, settings, recorded_baseline(artifact, manifest))
    recorded = (manifest.get("baseline") or {}).get("prediction")
    rebuilt = explainer.baseline_record()["prediction"]
    if not _close(rebuilt, recorded):
        raise NoDecomposition(
            "the reference run's baseline does not reproduce the prediction its manifest records "
            f"({rebuilt} vs {recorded})"
        )
    return explainer


def recorded_baseline(artifact: LoadedArtifact, manifest: dict[str, Any]) -> Baseline:
    """The baseline row a run's manifest records (feature -> value), resolved for its model."""
    values = {k: v for k, v in (manifest.get("baseline") or {}).items() if k != "prediction"}
    spec = artifact.metadata.inputs
    if set(values) != set(spec.feature_names):
        raise NoDecomposition("the reference run's manifest records no baseline row of its model's features")
    section = BaselineSection(numeric="manual", categorical="manual", values=values)
    try:
        return resolve_baseline(spec, section, source="the reference run's manifest")
    except EXPECTED_ERRORS as error:
        raise NoDecomposition(f"the reference run's baseline cannot be rebuilt: {error}") from None


def _close(a: Any, b: Any) -> bool:
    """Whether two recorded predictions (a score, or scores by label) agree."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if not isinstance(a, numbers.Real) or not isinstance(b, numbers.Real):
        return False
    return bool(np.isclose(a, b, atol=PREDICTION_TOLERANCE, rtol=PREDICTION_TOLERANCE))


def target_scores(explainer: BatchExplainer, numeric: np.ndarray, categorical: np.ndarray) -> tuple:
    """Each row's explained target (the first, in a multi-target run) and its score."""
    artifact = explainer.artifact
    scores = artifact.backend.predict(artifact.model, artifact.metadata, numeric, categorical)
    setting = target_setting(explainer.output, explainer.settings.target)
    targets = target_columns(setting, explainer.output, scores)[:, 0]
    return targets, scores[np.arange(len(scores)), targets]


def attribute(
    explainer: BatchExplainer, rows: pa.Table, features: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """``explainer``'s attributions of ``features`` on ``rows`` (each row's first target, the run's
    settings) and its scores of those targets."""
    spec = explainer.spec
    missing = [f for f in features if f not in spec.feature_names]
    if missing:
        raise NoDecomposition(f"model {explainer.artifact.uri} has no feature(s) {missing}")
    columns = [spec.feature_names.index(f) for f in features]
    parts, scores = [], []
    for start in range(0, rows.num_rows, CHUNK_ROWS):
        chunk = rows.slice(start, CHUNK_ROWS).select(spec.feature_names)
        numeric, categorical = encode_rows(chunk, spec)
        targets, score = target_scores(explainer, numeric, categorical)
        found = explainer.attributions(numeric, categorical, targets[:, None])
        parts.append(found.attributions[:, columns])
        scores.append(score)
    width = len(features)
    return np.concatenate(parts) if parts else np.zeros((0, width)), np.concatenate(scores or [np.zeros(0)])


def paired_sample(
    folder: str,
    own: BatchExplainer,
    other: BatchExplainer,
    features: list[str],
    settings: DecompositionSection,
) -> PairedSample:
    """A sample of the run's explained rows: its own attributions (read from the run, which the
    run's model must reproduce the predictions of) and ``other``'s, computed now."""
    attributions = open_attributions(folder)
    inputs = explained_inputs(folder)
    if inputs is None:
        raise NoDecomposition(f"the explained rows of {folder} are not found through its manifest")
    if primary_rows(attributions):
        ranks = attributions.read_table([RANK_COLUMN]).column(RANK_COLUMN).to_numpy()
        candidates = np.flatnonzero(ranks == 1)
    else:
        candidates = np.arange(attributions.num_rows)
    if len(candidates) != inputs.num_rows:
        raise NoDecomposition(
            f"{folder}: {inputs.num_rows} explained rows for {len(candidates)} attributions"
        )
    needed = sorted(set(own.spec.feature_names) | set(other.spec.feature_names))
    lacking = [c for c in needed if c not in inputs.schema.names]
    if lacking:
        raise NoDecomposition(f"the explained rows of {folder} lack the other model's feature(s) {lacking}")
    rng = np.random.default_rng(settings.seed)
    chosen = np.sort(
        rng.choice(len(candidates), size=min(settings.sample_rows, len(candidates)), replace=False)
    )
    recorded = attributions.take(candidates[chosen], [*map(attribution_column, features), "prediction"])
    rows = inputs.take(chosen, needed)
    _, scores = target_scores(own, *encode_rows(rows.select(own.spec.feature_names), own.spec))
    predictions = recorded.column("prediction").to_numpy()
    if not np.allclose(scores, predictions, atol=PREDICTION_TOLERANCE, rtol=PREDICTION_TOLERANCE):
        raise NoDecomposition(f"model {own.artifact.uri} does not reproduce the predictions of {folder}")
    own_values = np.column_stack([recorded.column(attribution_column(f)).to_numpy() for f in features])
    other_values, _ = attribute(other, rows, features)
    return PairedSample(own_values.astype(np.float64), other_values.astype(np.float64), len(candidates))


def cross_terms(config: RunConfig, reference_uri: str, current_uri: str, features: list[str]) -> CrossTerms:
    """The extra IG pass for the current run of ``config`` against ``reference_uri``: a sample
    of each run's rows explained by the other's model (``config.drift.decomposition``); raises
    :class:`NoDecomposition` with the reason when there is nothing to split or it cannot be done."""
    started = time.perf_counter()
    reference_folder, reference_manifest = run_manifest(reference_uri)
    current_folder, current_manifest = run_manifest(current_uri)
    versions = {"reference": model_version(reference_manifest), "current": model_version(current_manifest)}
    if versions["reference"] == versions["current"]:
        raise NoDecomposition(
            f"both runs explain model version {versions['current']}: the change is the data's alone"
        )
    settings = config.drift.decomposition
    try:
        reference = manifest_explainer(reference_manifest, config.model.allow_pickle)
        current = build_explainer(config)
        if current.artifact.checksum != (current_manifest.get("artifact") or {}).get("checksum"):
            raise NoDecomposition(f"the current run's model {config.model.uri} changed since the run")
        on_current = paired_sample(current_folder, current, reference, features, settings)
        on_reference = paired_sample(reference_folder, reference, current, features, settings)
    except EXPECTED_ERRORS as error:
        raise NoDecomposition(f"the extra IG pass failed: {error}") from None
    seconds = time.perf_counter() - started
    log.info(
        "decomposition: %d + %d rows re-explained by the other model in %.1f s",
        on_current.size,
        on_reference.size,
        seconds,
    )
    return CrossTerms(features, on_current, on_reference, versions, seconds)
