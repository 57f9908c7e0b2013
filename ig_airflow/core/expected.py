"""Expected Gradients (Erion et al. 2021): IG averaged over baselines drawn from reference data.

``baseline: {kind: distribution, samples: k}`` explains each row against ``k`` rows drawn with
replacement from a pool of reference rows (``pool_rows`` of ``data.reference_uri``, sampled once
with ``seed``). A row's draws come from a generator seeded by ``seed`` and a hash of the row's
encoded values, so a row gets the same baselines in any batch, shard or order. Each row is
expanded into its ``k`` (row, baseline) pairs, which the single-baseline engine explains with a
baseline per row (vectorised, every target mode, every framework):

- ``path: integral``: ``k`` full path integrals with the run's rule (adaptive or fixed steps);
  completeness holds per sample, so the mean attribution adds up to ``F(x) - mean_j F(b_j)``
  within the tolerance, and a row is ``converged`` when every sample is.
- ``path: random_point``: one uniformly random point ``alpha_j`` per sample, the estimator of the
  paper (``k`` gradient evaluations per row); complete only in expectation, so ``delta`` is
  mostly Monte-Carlo error and a row is ``converged`` only when it happens to meet the check.

The result per (row, target) is the mean attribution and its Monte-Carlo standard error
``std_j(ddof=1) / sqrt(k)`` per feature, the prediction, the mean baseline prediction, ``delta``
against the mean gap and ``n_steps`` = gradient evaluations of all samples.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from ig_airflow.config import BaselineSection, IGSection
from ig_airflow.core.adaptive import Completeness, RowAttributions, adaptive_attributions, finish
from ig_airflow.core.attribution import InputAttributor
from ig_airflow.core.backend import FixedStepResult, PathGradients
from ig_airflow.core.baselines import (
    Baseline,
    categorical_baseline,
    check_value_features,
    numeric_value,
    resolve_baseline,
)
from ig_airflow.core.encoding import encode_rows
from ig_airflow.dataset import open_dataset
from ig_airflow.exceptions import ConfigError, InputDataError
from ig_airflow.spec import InputSpec


@dataclass(frozen=True)
class BaselinePool:
    """Encoded reference rows that baselines are drawn from, and the settings of the draws."""

    numeric: np.ndarray  # float64 [P, n_numeric]
    categorical: np.ndarray  # int64 [P, n_categorical]
    settings: BaselineSection
    reference_rows: int  # rows of the reference data the pool was sampled from

    def __len__(self) -> int:
        return len(self.numeric)

    def point(self, source: str) -> Baseline:
        """A representative point (the pool's per-feature median and most frequent index): the
        engine's memory probe, and the value a feature is set to where one row stands for the
        distribution (the quality stage's deletion curves)."""
        categorical = np.array(
            [np.bincount(column).argmax() for column in self.categorical.T], dtype=np.int64
        ).reshape(-1)
        return Baseline(np.median(self.numeric, axis=0), categorical, {}, source)


def read_pool(spec: InputSpec, settings: BaselineSection, reference_uri: str | None) -> BaselinePool:
    """``settings.pool_rows`` rows of the reference data (all when fewer), sampled with
    ``settings.seed`` and encoded; ``settings.values`` override single features of every row."""
    if not reference_uri:
        raise ConfigError("baseline.kind: distribution draws baselines from data.reference_uri; set it")
    dataset = open_dataset(reference_uri)
    missing = [c for c in spec.feature_names if c not in dataset.schema.names]
    if missing:
        raise InputDataError(f"data.reference_uri {reference_uri}: missing feature column(s) {missing}")
    total = dataset.num_rows
    if total == 0:
        raise InputDataError(f"data.reference_uri {reference_uri}: no rows to draw baselines from")
    rng = np.random.default_rng(settings.seed)
    positions = np.sort(rng.choice(total, size=min(settings.pool_rows, total), replace=False))
    try:
        numeric, categorical = encode_rows(dataset.take(positions, spec.feature_names), spec)
    except InputDataError as exc:
        raise InputDataError(f"data.reference_uri {reference_uri}: {exc}") from None
    _override(spec, settings, numeric, categorical)
    return BaselinePool(numeric, categorical, settings, total)


def _override(
    spec: InputSpec, settings: BaselineSection, numeric: np.ndarray, categorical: np.ndarray
) -> None:
    """Set the features named in ``baseline.values`` to that value in every pool row (checked as
    a point baseline's values are)."""
    check_value_features(spec, settings.values)
    for j, feature in enumerate(spec.numeric):
        if feature.name in settings.values:
            numeric[:, j] = numeric_value(feature.name, settings.values[feature.name])
    for j, feature in enumerate(spec.categorical):
        if feature.name in settings.values:
            categorical[:, j] = categorical_baseline(spec, feature, settings, None)[1]


def row_draws(
    numeric: np.ndarray, categorical: np.ndarray, pool_size: int, samples: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per row: ``samples`` pool indices (with replacement) and as many uniform alphas in [0, 1),
    from a generator seeded by ``seed`` and a hash of the row's encoded values (the same row gets
    the same draws in any batch)."""
    indices = np.empty((len(numeric), samples), dtype=np.int64)
    alphas = np.empty((len(numeric), samples))
    numeric = np.ascontiguousarray(numeric, dtype=np.float64)
    categorical = np.ascontiguousarray(categorical, dtype=np.int64)
    for i in range(len(numeric)):
        digest = hashlib.blake2b(numeric[i].tobytes() + categorical[i].tobytes(), digest_size=16).digest()
        rng = np.random.default_rng([seed, *np.frombuffer(digest, dtype="<u8").tolist()])
        indices[i] = rng.integers(pool_size, size=samples)
        alphas[i] = rng.random(samples)
    return indices, alphas


class PairedAttributor:
    """The :class:`~ig_airflow.core.backend.Attributor` of rows packed with their own baseline
    row (columns ``[x | b]`` of the numeric and of the categorical block), so that the adaptive
    engine's row selections carry each row's baseline along."""

    def __init__(self, inner: InputAttributor, n_numeric: int, n_categorical: int, output_scale: float):
        self.inner = inner
        self.n_numeric, self.n_categorical = n_numeric, n_categorical
        self.output_scale = output_scale

    def split(self, numeric: np.ndarray, categorical: np.ndarray) -> tuple[np.ndarray, ...]:
        n, c = self.n_numeric, self.n_categorical
        return numeric[:, :n], categorical[:, :c], numeric[:, n:], categorical[:, c:]

    def attribute(
        self, numeric: np.ndarray, categorical: np.ndarray, n_steps: int, targets: np.ndarray | None = None
    ) -> FixedStepResult:
        x_num, x_cat, b_num, b_cat = self.split(numeric, categorical)
        return self.inner.attribute(x_num, x_cat, n_steps, targets, (b_num, b_cat))

    def path_gradients(
        self,
        numeric: np.ndarray,
        categorical: np.ndarray,
        alphas: np.ndarray,
        targets: np.ndarray | None = None,
    ) -> PathGradients:
        x_num, x_cat, b_num, b_cat = self.split(numeric, categorical)
        return self.inner.path_gradients(x_num, x_cat, alphas, targets, (b_num, b_cat))


@dataclass
class ExpectedAttributions(RowAttributions):
    """:class:`RowAttributions` of Expected Gradients: the mean over the samples, with the
    Monte-Carlo standard error of each mean attribution (``[B*T, F]``)."""

    standard_error: np.ndarray | None = None


class ExpectedGradients:
    """Explains rows against ``pool.settings.samples`` baselines each, drawn from ``pool``.

    Args:
        attributor: the input-level attributor of the model (built on ``pool.point()``).
        pool: the reference rows and the settings of the draws.
        settings: the run's ``ig`` section (rule, tolerance, ``batch_rows`` bounds the expansion).
    """

    def __init__(self, attributor: InputAttributor, pool: BaselinePool, settings: IGSection):
        self.attributor, self.pool, self.settings = attributor, pool, settings
        self.samples, self.path = pool.settings.samples, pool.settings.path
        spec = attributor.spec
        with attributor.adapter.inference():
            self.pool_scores = attributor.ops.numpy(
                attributor.adapter(*attributor.tensors(pool.numeric, pool.categorical))
            )
        self.paired = PairedAttributor(
            attributor, len(spec.numeric), len(spec.categorical), self.output_scale()
        )

    def output_scale(self) -> float:
        """The unit of ``ig.atol``: the pool's mean |score| of its largest output, at least 1 (1
        for a probability)."""
        return float(max(1.0, np.abs(self.pool_scores).mean(axis=0).max(initial=0.0)))

    def targets(self, numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
        """Each row's target columns, resolved once from its scores (shared by its samples)."""
        _, scores = self.attributor.embed(*self.attributor.tensors(numeric, categorical))
        return self.attributor.scores(scores, None).targets

    def explain(
        self, numeric: np.ndarray, categorical: np.ndarray, targets: np.ndarray | None = None
    ) -> ExpectedAttributions:
        """Mean attributions and standard errors of the rows, ``batch_rows // samples`` rows
        (``batch_rows`` pairs) at a time."""
        if targets is None:
            targets = self.targets(numeric, categorical)
        indices, alphas = row_draws(
            numeric, categorical, len(self.pool), self.samples, self.pool.settings.seed
        )
        block = max(1, self.settings.batch_rows // self.samples)
        parts = [
            self.sampled(numeric[s], categorical[s], targets[s], indices[s], alphas[s])
            for s in (slice(i, i + block) for i in range(0, len(numeric), block))
        ]
        return reduce_samples(concatenate(parts, targets), self.samples, self.check(), self.path)

    def check(self) -> Completeness:
        return Completeness.of(self.settings, self.paired.output_scale)

    def sampled(
        self,
        numeric: np.ndarray,
        categorical: np.ndarray,
        targets: np.ndarray,
        indices: np.ndarray,
        alphas: np.ndarray,
    ) -> RowAttributions:
        """The attributions of every (row, sample) pair, rows major."""
        k = self.samples
        pairs = indices.reshape(-1)
        paired_numeric = np.concatenate([np.repeat(numeric, k, 0), self.pool.numeric[pairs]], axis=1)
        paired_categorical = np.concatenate(
            [np.repeat(categorical, k, 0), self.pool.categorical[pairs]], axis=1
        )
        expanded = np.repeat(targets, k, 0)
        if self.path == "integral":
            return adaptive_attributions(
                self.paired, paired_numeric, paired_categorical, self.settings, expanded
            )
        result = self.paired.path_gradients(
            paired_numeric, paired_categorical, alphas.reshape(-1, 1), expanded
        )
        chosen = result.attributions if self.settings.multiply_by_inputs else result.gradients
        delta = result.attributions[:, 0].sum(-1) - (result.prediction - result.baseline_prediction)
        steps = np.ones(len(delta), dtype=np.int64)
        return finish(
            chosen[:, 0],
            result.prediction,
            result.baseline_prediction,
            delta,
            steps,
            self.check(),
            len(delta),
            expanded,
        )

    def record(self) -> dict[str, Any]:
        """What the manifest says about the baselines."""
        settings = self.pool.settings
        return {
            "kind": "distribution",
            "samples": settings.samples,
            "path": settings.path,
            "seed": settings.seed,
            "pool_rows": len(self.pool),
            "reference_rows": self.pool.reference_rows,
            "overridden": dict(settings.values),
            "completeness": "per sample: each path integral adds up to F(x) - F(b_j)"
            if settings.path == "integral"
            else "in expectation only: delta is mostly Monte-Carlo error",
        }


def concatenate(parts: list[RowAttributions], targets: np.ndarray) -> RowAttributions:
    """One :class:`RowAttributions` of consecutive blocks."""
    arrays = {
        name: np.concatenate([getattr(p, name) for p in parts])
        for name in (
            "attributions",
            "prediction",
            "baseline_prediction",
            "delta",
            "completeness_error",
            "n_steps",
            "converged",
        )
    }
    moved = [p.barely_moved if p.barely_moved is not None else np.zeros(len(p.delta), bool) for p in parts]
    return RowAttributions(
        **arrays,
        gradient_evaluations=sum(p.gradient_evaluations for p in parts),
        targets=targets,
        barely_moved=np.concatenate(moved),
    )


def reduce_samples(samples: RowAttributions, k: int, check: Completeness, path: str) -> ExpectedAttributions:
    """Mean over each row's ``k`` samples (entries ordered row, sample, target), the standard
    error of each mean attribution, and the completeness check against the mean gap."""
    targets = samples.targets
    rows, n_targets = targets.shape

    def per_row(array: np.ndarray) -> np.ndarray:
        return array.reshape(rows, k, n_targets, *array.shape[1:])

    attributions = per_row(samples.attributions)
    features = attributions.shape[-1]
    prediction = per_row(samples.prediction).mean(axis=1).reshape(-1)
    baseline = per_row(samples.baseline_prediction).mean(axis=1).reshape(-1)
    delta = per_row(samples.delta).mean(axis=1).reshape(-1)
    steps = per_row(samples.n_steps).sum(axis=1).reshape(-1)
    mean = attributions.mean(axis=1).reshape(-1, features)
    result = finish(mean, prediction, baseline, delta, steps, check, samples.gradient_evaluations, targets)
    if path == "integral":
        result.converged = per_row(samples.converged).all(axis=1).reshape(-1)
        result.barely_moved = result.converged & per_row(samples.barely_moved).any(axis=1).reshape(-1)
    spread = attributions.std(axis=1, ddof=1).reshape(-1, features) if k > 1 else np.zeros_like(mean)
    return ExpectedAttributions(**vars(result), standard_error=spread / np.sqrt(k))


def resolve_baselines(
    spec: InputSpec, settings: BaselineSection, reference_uri: str | None, source: str
) -> tuple[Baseline, BaselinePool | None]:
    """The run's baseline row, and with ``kind: distribution`` the pool of reference rows (the
    row is then the pool's representative point, :meth:`BaselinePool.point`)."""
    if settings.kind == "distribution":
        pool = read_pool(spec, settings, reference_uri)
        return pool.point(source), pool
    return resolve_baseline(spec, settings, reference_uri, source), None
