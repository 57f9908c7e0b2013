"""The quality stage: can this run's explanations be trusted? Measured on a sample of its
explained rows with the run's own model, baseline and IG settings, written to
``<run>/quality/quality.json`` and checked against the config's thresholds (``quality``):

- the IG deletion curve must fall faster than a random order's (else the attributions say
  nothing about the model); insertion, and the permutation-importance order, are reported;
- the model-randomisation check: the attributions of the model with its weights redrawn must
  rank the features differently (mean per-row Spearman correlation below a threshold);
- infidelity and max-sensitivity are reported for monitoring.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from ig_airflow.artifacts import LoadedArtifact
from ig_airflow.config import RunConfig
from ig_airflow.core.encoding import encode_rows
from ig_airflow.core.outputs import target_columns, target_setting
from ig_airflow.dataset import open_dataset
from ig_airflow.exceptions import InputDataError, QualityCheckFailed
from ig_airflow.io import exists, read_json, write_json
from ig_airflow.layout import RunLayout, explained_input
from ig_airflow.quality import metrics
from ig_airflow.results import RANK_COLUMN, attribution_column
from ig_airflow.run.explainer import BatchExplainer, build_explainer

log = logging.getLogger(__name__)
SCORE_CHUNK_ROWS = 16384
PREDICTION_TOLERANCE = 1e-3  # the model must reproduce the run's predictions (same artifact)


@dataclass
class Sample:
    """The sampled rows: encoded inputs, the run's attributions, the explained target's column."""

    positions: np.ndarray  # rows of the attributions dataset
    numeric: np.ndarray
    categorical: np.ndarray
    attributions: np.ndarray  # [S, F]
    targets: np.ndarray  # int [S]
    scores: np.ndarray  # [S] the model's score of the target


def scorer(explainer: BatchExplainer, targets: np.ndarray) -> metrics.ScoreFn:
    """The model's score of the target ``targets[rows[i]]`` for each encoded row, via its backend."""
    artifact = explainer.artifact

    def score(numeric: np.ndarray, categorical: np.ndarray, rows: np.ndarray) -> np.ndarray:
        out = np.empty(len(numeric))
        for start in range(0, len(numeric), SCORE_CHUNK_ROWS):
            part = slice(start, start + SCORE_CHUNK_ROWS)
            scores = artifact.backend.predict(
                artifact.model, artifact.metadata, numeric[part], categorical[part]
            )
            out[part] = scores[np.arange(len(scores)), targets[rows[part]]]
        return out

    return score


def explanation_function(
    explainer: BatchExplainer, targets: np.ndarray, attributor: Any = None
) -> metrics.ExplainFn:
    """IG attributions of encoded rows with the run's settings (``attributor``: another model's)."""

    def explain(numeric: np.ndarray, categorical: np.ndarray, rows: np.ndarray) -> np.ndarray:
        result = explainer.attributions(numeric, categorical, targets[rows][:, None], attributor)
        return result.attributions

    return explain


def _columns(explainer: BatchExplainer) -> metrics.FeatureColumns:
    baseline = explainer.baseline
    return metrics.FeatureColumns.of(explainer.spec, baseline.numeric, baseline.categorical)


def draw_sample(config: RunConfig, explainer: BatchExplainer, manifest: dict[str, Any]) -> Sample:
    """``quality.sample_rows`` explained rows (their primary target in a multi-target run),
    drawn with ``quality.seed``; the model must reproduce the run's predictions on them."""
    layout = RunLayout.of(config)
    attributions = open_dataset(layout.attributions)
    features = explainer.spec.feature_names
    if explainer.per_target:
        ranks = attributions.read_table([RANK_COLUMN]).column(RANK_COLUMN).to_numpy()
        candidates = np.flatnonzero(ranks == 1)  # one per input row, in input order
    else:
        candidates = np.arange(attributions.num_rows)
    rng = np.random.default_rng(config.quality.seed)
    chosen = np.sort(
        rng.choice(len(candidates), size=min(config.quality.sample_rows, len(candidates)), replace=False)
    )
    table = attributions.take(candidates[chosen], [*map(attribution_column, features), "prediction"])
    inputs = open_dataset(*explained_input(manifest)).take(chosen, features)
    numeric, categorical = encode_rows(inputs, explainer.spec)
    artifact = explainer.artifact
    scores = artifact.backend.predict(artifact.model, artifact.metadata, numeric, categorical)
    setting = target_setting(explainer.output, explainer.settings.target)
    targets = target_columns(setting, explainer.output, scores)[:, 0]
    target_scores = scores[np.arange(len(scores)), targets]
    recorded = table.column("prediction").to_numpy()
    if not np.allclose(target_scores, recorded, atol=PREDICTION_TOLERANCE, rtol=PREDICTION_TOLERANCE):
        worst = int(np.argmax(np.abs(target_scores - recorded)))
        raise InputDataError(
            f"{layout.attributions}: the model {config.model.uri} does not reproduce the run's "
            f"predictions (row {int(candidates[chosen][worst])}: {target_scores[worst]:.6g} vs "
            f"{recorded[worst]:.6g} recorded)"
        )
    matrix = np.column_stack([table.column(attribution_column(f)).to_numpy() for f in features])
    return Sample(candidates[chosen], numeric, categorical, matrix.astype(np.float64), targets, target_scores)


def faithfulness(config: RunConfig, explainer: BatchExplainer, sample: Sample) -> dict[str, Any]:
    """Deletion and insertion curves (IG, random and permutation-importance orders) and their areas."""
    settings = config.quality
    columns = _columns(explainer)
    score = scorer(explainer, sample.targets)
    rng = np.random.default_rng(settings.seed + 1)
    n, f = sample.attributions.shape
    importance = metrics.permutation_importance(score, sample.numeric, sample.categorical, columns, rng)
    orders = {
        "ig": metrics.order_by_magnitude(sample.attributions),
        "random": metrics.random_order(n, f, rng),
        "permutation": np.tile(np.argsort(-importance, kind="stable"), (n, 1)),
    }
    steps = metrics.curve_steps(f, settings.curve_points)
    min_change = max(config.ig.atol, 1e-3 * float(np.max(np.abs(sample.scores), initial=1.0)))
    result: dict[str, Any] = {"fraction_removed": (steps / f).round(6).tolist()}
    per_row: dict[str, np.ndarray] = {}
    for kind, insertion in (("deletion", False), ("insertion", True)):
        curves, areas = {}, {}
        for name, order in orders.items():
            raw = metrics.removal_curves(
                score, sample.numeric, sample.categorical, columns, order, steps, insertion
            )
            scaled, moved = metrics.normalised_curves(raw, insertion, min_change)
            per_row[f"{kind}_{name}"] = metrics.area_under(scaled[moved], steps)
            mean = scaled[moved].mean(axis=0) if moved.any() else np.full(len(steps), np.nan)
            curves[name], areas[name] = mean.round(6).tolist(), float(per_row[f"{kind}_{name}"].mean())
        result[kind] = {"auc": areas, "curve": curves}
    gain = per_row["deletion_random"] - per_row["deletion_ig"]  # paired: the same rows
    mean, low, high = metrics.mean_interval(gain) if len(gain) else (float("nan"),) * 3
    result["deletion"]["gain_over_random"] = {"mean": mean, "ci95": [low, high]}
    result["rows_scored"] = int(moved.sum())
    result["rows_barely_moved"] = int((~moved).sum())
    result["min_output_change"] = min_change
    names = explainer.spec.feature_names
    result["permutation_importance"] = dict(zip(names, importance.round(8).tolist(), strict=True))
    return result


def stability(config: RunConfig, explainer: BatchExplainer, sample: Sample) -> dict[str, Any]:
    """Infidelity (baseline-mask perturbations) and max-sensitivity (uniform, scaled per feature)."""
    settings = config.quality
    columns = _columns(explainer)
    score = scorer(explainer, sample.targets)
    perturb = metrics.baseline_mask_perturbation(columns, settings.infidelity_mask_probability)
    args = (
        score,
        sample.numeric,
        sample.categorical,
        sample.attributions,
        perturb,
        settings.infidelity_samples,
    )
    raw = metrics.infidelity(*args, np.random.default_rng(settings.seed + 2))
    normalised = metrics.infidelity(*args, np.random.default_rng(settings.seed + 2), normalize=True)
    rows = min(settings.sensitivity_rows, len(sample.numeric))
    spread = sample.numeric.std(axis=0) if len(sample.numeric) > 1 else np.zeros(sample.numeric.shape[1])
    sensitivity = metrics.max_sensitivity(
        explanation_function(explainer, sample.targets),
        sample.numeric[:rows],
        sample.categorical[:rows],
        sample.attributions[:rows],
        metrics.uniform_perturbation(settings.sensitivity_radius * spread),
        settings.sensitivity_samples,
        np.random.default_rng(settings.seed + 3),
    )
    return {
        "infidelity": {
            "mean": float(raw.mean()),
            "normalized_mean": float(normalised.mean()),
            "perturbation": f"each feature at its baseline with p={settings.infidelity_mask_probability}",
            "samples": settings.infidelity_samples,
        },
        "max_sensitivity": {
            "mean": float(sensitivity.mean()),
            "max": float(sensitivity.max()),
            "radius": f"{settings.sensitivity_radius} x each numeric feature's standard deviation",
            "samples": settings.sensitivity_samples,
            "rows": rows,
        },
    }


def randomisation(config: RunConfig, explainer: BatchExplainer, sample: Sample) -> dict[str, Any]:
    """Attributions of the model with its weights redrawn, against the run's (Adebayo et al.)."""
    artifact = explainer.artifact
    with artifact.backend.randomised(artifact.model, config.quality.seed):
        attributor = artifact.backend.attributor(
            artifact.model, artifact.metadata, explainer.baseline, explainer.settings
        )
        explain = explanation_function(explainer, sample.targets, attributor)
        randomised = explain(sample.numeric, sample.categorical, np.arange(len(sample.numeric)))
    # features at their baseline value have no attribution in either model (IG's dummy axiom):
    # ranking them would correlate any two models, so each row is ranked over its moved features
    moved = ~_columns(explainer).at_baseline_mask(sample.numeric, sample.categorical)
    rows = metrics.rank_correlation(np.abs(sample.attributions), np.abs(randomised), moved)
    overall = metrics.rank_correlation(
        np.abs(sample.attributions).mean(axis=0)[None, :], np.abs(randomised).mean(axis=0)[None, :]
    )
    rows = rows[np.isfinite(rows)]
    return {
        "rows": len(rows),
        "row_spearman_mean": float(rows.mean()) if len(rows) else None,
        "row_spearman_median": float(np.median(rows)) if len(rows) else None,
        "global_spearman": float(overall[0]),
        "threshold": config.quality.max_randomised_correlation,
    }


def _checks(config: RunConfig, result: dict[str, Any]) -> list[dict[str, Any]]:
    settings = config.quality
    areas = result["deletion"]["auc"]
    gain = result["deletion"]["gain_over_random"]
    low = gain["ci95"][0]
    checks = [
        {
            "name": "deletion_better_than_random",
            "passed": bool(low > settings.min_gain_over_random),
            "detail": f"IG deletion AUC {areas['ig']:.4f} vs random {areas['random']:.4f} (gain "
            f"{gain['mean']:.4f}, 95% CI [{low:.4f}, {gain['ci95'][1]:.4f}] over the rows; its lower "
            f"bound must exceed {settings.min_gain_over_random}); permutation importance "
            f"{areas['permutation']:.4f}",
        }
    ]
    if "randomisation" in result and result["randomisation"]["row_spearman_mean"] is not None:
        value = result["randomisation"]["row_spearman_mean"]
        checks.append(
            {
                "name": "model_randomisation",
                "passed": bool(value < settings.max_randomised_correlation),
                "detail": f"mean per-row Spearman of |attributions|, model vs re-initialised copy: "
                f"{value:.3f} (required < {settings.max_randomised_correlation})",
            }
        )
    return checks


def assess_quality(config: RunConfig, artifact: LoadedArtifact | None = None) -> dict[str, Any]:
    """Measure the run's explanations on a sample (``config.quality``), write
    ``<run>/quality/quality.json`` and return it; raises :class:`QualityCheckFailed` after
    writing when a check fails and ``quality.on_fail`` is ``fail``."""
    layout = RunLayout.of(config)
    if not exists(layout.manifest):
        raise InputDataError(f"{layout.manifest}: no run manifest; the IG stage has not finished this run")
    manifest = read_json(layout.manifest)
    explainer = build_explainer(config, artifact)
    sample = draw_sample(config, explainer, manifest)
    result: dict[str, Any] = {
        "run": manifest.get("run"),
        "rows": len(sample.positions),
        "seed": config.quality.seed,
    }
    result.update(faithfulness(config, explainer, sample))
    result.update(stability(config, explainer, sample))
    if config.quality.randomisation:
        result["randomisation"] = randomisation(config, explainer, sample)
    result["checks"] = _checks(config, result)
    result["passed"] = all(check["passed"] for check in result["checks"])
    write_json(layout.quality.json, result)
    for check in result["checks"]:
        (log.info if check["passed"] else log.warning)(
            "quality %s: %s: %s", "ok" if check["passed"] else "FAILED", check["name"], check["detail"]
        )
    if not result["passed"] and config.quality.on_fail == "fail":
        failed = [c["detail"] for c in result["checks"] if not c["passed"]]
        raise QualityCheckFailed(f"{layout.quality.json}: quality checks failed: {'; '.join(failed)}")
    return result
