"""The run configuration: one YAML file, parsed once into typed, strict objects.

Unknown keys, wrong types and missing required keys are rejected with the key path at fault,
e.g. ``run.yaml: ig.n_steps: Input should be a valid integer``. String values may hold
``{{ ds }}``-style placeholders; :func:`load_run_config` fills them from ``template_vars``
(Airflow fills them through the operators' ``template_fields``).

Example::

    model:
      uri: demo_output/artifacts/adult_torch
    data:
      input_uri: demo_output/data/adult_test.parquet
      id_columns: [row_id]
      reference_uri: demo_output/data/adult_train.parquet
    baseline:
      numeric: median
      categorical: most_frequent
    ig:
      n_steps: 32
      tolerance: 0.01
    output:
      uri: demo_output/runs/{{ ds }}
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ig_airflow.exceptions import ConfigError
from ig_airflow.io import sha256_json

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.]*)\s*\}\}")
MAX_CONFIG_BYTES = 1 << 20  # a run config is a page of YAML, not a data file
MAX_YAML_ALIASES = 64  # anchors are for sharing a block or two; more is an expansion bomb


class StrictModel(BaseModel):
    """Base of every settings and metadata model: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSection(StrictModel):
    uri: str = Field(description="Directory (local path or fsspec URI) of the model artifact.")
    allow_pickle: bool = Field(
        False, description="Allow loading a fully pickled model (executes arbitrary code)."
    )


class DataSection(StrictModel):
    input_uri: str = Field(
        description="Rows to explain: a Parquet file, a directory, a glob or a Hive-partitioned "
        "dataset, on any fsspec filesystem."
    )
    partition: dict[str, str] = Field(
        default_factory=dict,
        description="Partitions of a Hive-partitioned input to explain, e.g. {ds: '{{ ds }}'} (the "
        "others are not read).",
    )
    id_columns: list[str] = Field(
        default_factory=list, description="Columns copied unchanged into the output."
    )
    reference_uri: str | None = Field(
        None,
        description="Reference rows for mean/median/most_frequent baselines (file, directory, glob "
        "or dataset).",
    )
    label_column: str | None = Field(
        None,
        description="The rows' labels, for ig.loss: loss attributions of labelled rows (a null label "
        "leaves its row unlabelled; a value that does not map to the model's output is an error).",
    )
    positive_label: int | float | str | None = Field(
        None,
        description="The positive class of a binary label (log_loss); every other value is negative. "
        "Default: the second of two output.classes, else the labels must be 0/1.",
    )


class BaselineSection(StrictModel):
    """One baseline row (``kind: point``), or Expected Gradients (``kind: distribution``): ``samples``
    reference rows drawn per explained row, the mean attribution and its Monte-Carlo standard
    error reported (see ``ig_airflow.core.expected``)."""

    kind: Literal["point", "distribution"] = Field(
        "point",
        description="point: one baseline row (numeric/categorical/values); distribution: Expected "
        "Gradients over rows of data.reference_uri.",
    )
    numeric: Literal["zero", "mean", "median", "manual"] = "zero"
    categorical: Literal["oov", "most_frequent", "manual"] = "oov"
    values: dict[str, float | int | str] = Field(
        default_factory=dict,
        description="Manual baseline per feature: a number for numeric features, a category "
        "value for categorical ones. Also overrides single features of other strategies (and of "
        "every drawn reference row with kind: distribution).",
    )
    samples: int = Field(
        32, ge=2, le=1024, description="kind: distribution: baselines drawn per row (k), with replacement."
    )
    path: Literal["integral", "random_point"] = Field(
        "integral",
        description="kind: distribution: integral: k full path integrals per row with ig.method (complete "
        "per sample); random_point: one uniformly random point per sample (Erion et al.; k gradients per "
        "row, complete only in expectation).",
    )
    pool_rows: int = Field(
        1000, ge=2, le=100_000, description="kind: distribution: reference rows sampled once into the pool."
    )
    seed: int = Field(0, ge=0, description="kind: distribution: seeds the pool and each row's draws.")

    @model_validator(mode="after")
    def _distribution_settings(self) -> BaselineSection:
        if self.kind == "distribution":
            for key, default in (("numeric", "zero"), ("categorical", "oov")):
                if getattr(self, key) != default:
                    raise ValueError(
                        f"{key}: not used with kind: distribution (baselines are reference rows)"
                    )
        return self


class TopK(StrictModel):
    """Each row's ``k`` highest-scoring outputs."""

    top_k: int = Field(ge=1)


Target = int | str | list[int | str] | TopK
TARGET_HELP = (
    "Output(s) to explain: a column index or class name, a list of them, 'predicted' (each row's "
    "argmax) or {top_k: k}; several targets share one forward pass, one output row per target."
)


class IGSection(StrictModel):
    """How IG is computed. ``method: adaptive_trapezoid`` (the default) refines each row's own
    path points, reusing every gradient evaluated, until ``|sum(attr) - change| <= atol *
    scale + tolerance * |change|`` (``scale``: 1 for a probability); the fixed rules recompute
    rows above it with doubled steps. See ``ig_airflow.core.adaptive``."""

    engine: Literal["vectorized", "captum"] = Field(
        "vectorized", description="vectorized: our batched engine; captum: reference backend."
    )
    method: Literal[
        "adaptive_trapezoid", "gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "trapezoid"
    ] = Field(
        "adaptive_trapezoid",
        description="adaptive_trapezoid: the trapezoid rule on per-row nested points, refined where "
        "the exact interval errors are largest; or a fixed rule. Default with engine: captum: "
        "gausslegendre.",
    )
    n_steps: int = Field(
        32,
        ge=1,
        le=4096,
        description="Points of the first pass; default 9 for adaptive_trapezoid, 32 for the fixed rules.",
    )
    tolerance: float | None = Field(
        0.01,
        ge=0,
        description="Relative completeness tolerance; rows above it are refined (adaptive_trapezoid) "
        "or recomputed with doubled steps, up to max_steps points. null disables adaptive steps.",
    )
    atol: float = Field(
        1e-4,
        ge=0,
        description="Absolute completeness slack in units of the output's scale: 1 for a probability "
        "(a calibrated or explain: probability output), else max(1, |baseline score|). A row within it "
        "but above the relative tolerance is reported as barely moved, not unconverged.",
    )
    max_steps: int = Field(512, ge=1, le=65536, description="Most gradient points per row.")
    internal_batch_size: int | None = Field(
        None, ge=1, description="Interpolated rows per forward/backward; default from memory."
    )
    memory_budget_mb: float = Field(256.0, gt=0)
    multiply_by_inputs: bool = True
    dtype: Literal["float32", "float64"] = "float32"
    batch_rows: int = Field(4096, ge=1, description="Rows read from Parquet per batch.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    target: Target | None = Field(None, description=TARGET_HELP + " Default: the artifact's output.target.")
    layer_attributions: list[str] = Field(
        default_factory=list,
        description="Hidden layers (PyTorch module names, Keras layer names) to attribute in their "
        "activation space, one column per unit: layer__<name>__<i>, with layer_delta__<name> and "
        "layer_n_steps__<name> (same tolerance and adaptive steps as the inputs).",
    )
    loss: Literal["auto", "log_loss", "cross_entropy", "squared_error"] | None = Field(
        None,
        description="Also explain each labelled row's loss against data.label_column (loss_attr__<feature>, "
        "loss, loss_at_baseline, loss_delta, loss_n_steps, loss_converged); auto: log_loss or "
        "cross_entropy for a probability output, squared_error for a raw one. null: off.",
    )
    loss_sample: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Share of the labelled rows whose loss is explained (chosen by a hash of the row's "
        "values, the same in every run); the others get null loss columns. 1: every labelled row.",
    )

    @model_validator(mode="before")
    @classmethod
    def _method_defaults(cls, data: Any) -> Any:
        """Captum has no adaptive_trapezoid: its default method is gausslegendre; the first pass
        of adaptive_trapezoid is 9 points (8 intervals), of the fixed rules 32."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if data.get("engine") == "captum":
            data.setdefault("method", "gausslegendre")
        if "n_steps" not in data and data.get("method", "adaptive_trapezoid") == "adaptive_trapezoid":
            data["n_steps"] = 9
        return data

    @model_validator(mode="after")
    def _steps_consistent(self) -> IGSection:
        if self.max_steps < self.n_steps:
            raise ValueError(f"max_steps ({self.max_steps}) must be >= n_steps ({self.n_steps})")
        if self.method in ("trapezoid", "adaptive_trapezoid") and self.n_steps < 2:
            raise ValueError(f"{self.method} needs n_steps >= 2")
        if self.engine == "captum" and self.method in ("trapezoid", "adaptive_trapezoid"):
            raise ValueError(f"engine captum has no {self.method} rule; use gausslegendre")
        if len(set(self.layer_attributions)) != len(self.layer_attributions):
            raise ValueError(f"layer_attributions lists a layer twice: {self.layer_attributions}")
        return self


Policy = Literal["fail", "skip", "map_to_default"]


class ValidationSection(StrictModel):
    """Input validation (Great Expectations) before IG; see :mod:`ig_airflow.validation`."""

    enabled: bool = True
    policy: Policy = Field(
        "skip",
        description="fail: stop the run; skip: quarantine the row with its reasons; "
        "map_to_default: unseen/missing category -> OOV (or defaults[feature]), "
        "numeric -> defaults[feature].",
    )
    feature_policies: dict[str, Policy] = Field(default_factory=dict, description="Per-feature override.")
    defaults: dict[str, float | int | str] = Field(
        default_factory=dict, description="map_to_default target per feature (categorical: OOV if unset)."
    )
    allow_extra_columns: bool = Field(True, description="Columns not in the spec pass through.")
    min_rows: int = Field(0, ge=0, description="Fail when the input has fewer rows.")
    batch_rows: int = Field(
        200_000,
        ge=1,
        description="Rows per Great Expectations run: the stage streams the input and holds one batch "
        "(and the id columns, to find ids repeated across batches).",
    )
    expectations: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Extra GX expectations: {type: ExpectColumnValuesToBeBetween, kwargs: {...}}.",
    )
    gx_project_root: str | None = Field(
        None, description="Use a GX file context at this directory instead of an ephemeral one."
    )
    output_uri: str | None = Field(None, description="Default: <output.uri>/validation.")
    data_docs: bool = Field(
        False,
        description="Build GX Data Docs (HTML) into the validation folder. Off by default: they show "
        "input values and column names as GX renders them; turn on for trusted inputs (SECURITY.md).",
    )


class RaySection(StrictModel):
    """Where and how the IG stage runs on Ray; see :mod:`ig_airflow.run.ray_runner`."""

    enabled: bool = Field(True, description="Run IG on Ray (false: in the calling process).")
    address: str | None = Field(
        None, description="Cluster address; default: RAY_ADDRESS, else an embedded local Ray."
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the embedded local Ray (default: all).")
    num_workers: int = Field(2, ge=1, description="Actors, each loading the model once.")
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0, description="num_gpus per actor; 0 = CPU workers.")
    shard_rows: int = Field(
        8192, ge=1, description="Rows per shard (a multiple of ig.batch_rows or smaller)."
    )
    max_restarts: int = Field(3, ge=0, description="Restarts of a dead worker process.")
    max_task_retries: int = Field(3, ge=0, description="Retries of a shard whose worker died.")
    max_shard_attempts: int = Field(2, ge=1, description="Fresh workers tried for a shard before failing.")


class AlertRule(StrictModel):
    """One alert condition of the drift stage (``drift.rules``). An alert fires when the metric's
    value crosses ``threshold``, the change is significant against what resampling the two runs
    under no change produces (Holm-adjusted p-value at most ``drift.alpha``) and its effect is at
    least ``min_effect``."""

    metric: Literal[
        "ndcg_at_k", "spearman", "share_change", "js_distance", "psi", "wasserstein", "drift_impact"
    ] = Field(description="The drift metric (drift.json's names).")
    threshold: float | None = Field(
        description="Alert below it (ndcg_at_k, spearman) or above it (|share_change|, js_distance, psi, "
        "wasserstein, drift_impact); null: this metric never alerts (for the features named)."
    )
    min_effect: float = Field(
        0.0,
        ge=0,
        description="Least effect size: for ndcg_at_k and spearman, the drop below the median that "
        "resampling produces; for share_change, |change in share|; for js_distance, psi and wasserstein, "
        "the share of total importance the feature's attributions moved (their Wasserstein distance over "
        "the reference's total mean |attribution|, less its resampling median); for drift_impact, the "
        "impact less its resampling median.",
    )
    features: list[str] = Field(
        default_factory=list,
        description="Only these features (a per-feature condition); empty: every feature. Ignored by the "
        "global metrics ndcg_at_k and spearman.",
    )


class DecompositionSection(StrictModel):
    """Where a change between two model versions comes from (``drift.decomposition``): an extra IG
    pass explains a sample of each run's rows with the other run's model, so that the change in
    each feature's importance splits into a model part and a data part (Shapley, symmetric; see
    ``ig_airflow.analysis.decomposition``)."""

    enabled: bool = Field(True, description="Decompose when the reference run has another model version.")
    sample_rows: int = Field(
        512, ge=8, le=100_000, description="Explained rows of each run explained again by the other model."
    )
    seed: int = Field(0, description="Seeds the sample and the bootstrap of the decomposition.")


class DriftSection(StrictModel):
    """Attribution drift against a reference run; see :mod:`ig_airflow.analysis.drift`. Every
    metric is set against the variation that resampling the same runs produces (a Poisson
    bootstrap on row blocks, :mod:`ig_airflow.analysis.statistics`): an alert needs its
    threshold crossed, a Holm-adjusted p-value at most ``alpha`` and a minimum effect. The
    thresholds below are the default conditions; ``rules`` overrides them per metric or feature."""

    reference_uri: str | None = Field(
        None,
        description="The reference run: a run folder or its attributions (another model version or "
        "period), or from the history table: 'previous_run' (alias 'previous': the latest earlier "
        "partition, any model), 'previous_model_version' (the latest run of another model version "
        "on this partition) or 'auto' (that, else the previous partition of this model version).",
    )
    history_uri: str | None = Field(None, description="Parquet history table, one row per run and feature.")
    wait_for_reference_s: float = Field(
        0,
        ge=0,
        description="With a history reference and a partitioned input: wait up to this long for the "
        "run of the input's previous partition to be recorded (a backfill explaining partitions in "
        "parallel), so that the reference does not depend on which run finished first; 0: no wait.",
    )
    run_key: str | None = Field(None, description="Identifies this run in the history table (default: ds).")
    top_k: int = Field(5, ge=1, description="k of NDCG@k and of the entered/left top-k lists.")
    ndcg_min: float = Field(
        0.90,
        ge=0,
        le=1,
        description="Alert below this NDCG@k (SageMaker default 0.90) when the drop is significant.",
    )
    spearman_min: float | None = Field(
        None, ge=-1, le=1, description="Alert below this rank correlation when the drop is significant."
    )
    js_max: float = Field(
        0.1,
        ge=0,
        description="Alert when a feature's Jensen-Shannon distance exceeds this, beyond what resampling "
        "produces (significant), and its attributions moved at least min_effect of the total importance.",
    )
    psi_max: float = Field(
        0.25, ge=0, description="Alert when a feature's PSI exceeds this, on the same conditions as js_max."
    )
    share_change_max: float = Field(
        0.10,
        ge=0,
        description="Alert when a feature's share of total importance moves more than this, significantly.",
    )
    min_effect: float = Field(
        0.05,
        ge=0,
        description="Least effect of the js_distance and psi alerts: the share of total importance the "
        "feature's attributions moved (Wasserstein distance over the reference's total mean |attribution|, "
        "less what resampling produces). A shape change in the attributions of a feature the model "
        "barely uses is no alert.",
    )
    drift_impact_max: float = Field(
        0.02,
        ge=0,
        description="Alert when a feature's drift impact (its share of importance, the larger of the two "
        "runs', times the Jensen-Shannon distance of its input values, less what resampling produces) "
        "exceeds this: an input shift on a feature the model ignores raises nothing. Needs both runs' "
        "explained inputs (found through their manifests).",
    )
    rules: list[AlertRule] = Field(
        default_factory=list,
        description="Alert conditions overriding the defaults above: per metric (features empty) or per "
        "feature; the last rule naming a feature wins over one for every feature.",
    )
    alpha: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="Family-wise error rate of the alerts: each test's p-value, Holm-adjusted over every "
        "test of the run, must be at most this.",
    )
    resamples: int = Field(
        200,
        ge=20,
        le=10_000,
        description="Bootstrap resamples (Poisson weights on row blocks) behind every interval and test, "
        "and behind the summaries' confidence intervals.",
    )
    seed: int = Field(0, description="Seeds the resamples: the same runs give the same numbers.")
    cohort_alerts: bool = Field(
        False,
        description="Also raise the cohorts' alerts (NDCG@k and share change per segment, in drift.json's "
        "cohorts) as the run's alerts; by default they are recorded only.",
    )
    bins: int = Field(
        20, ge=2, description="Shared bins of the distribution metrics (attributions and inputs)."
    )
    on_alert: Literal["fail", "warn"] = Field("warn", description="fail: the drift task fails on an alert.")
    waterfall_rows: int = Field(
        3, ge=0, description="Report waterfalls for the rows with the highest predictions."
    )
    waterfall_ids: list[str | int] = Field(
        default_factory=list, description="Report waterfalls for these ids (first id column) instead."
    )
    decomposition: DecompositionSection = Field(
        default_factory=DecompositionSection,
        description="With a reference of another model version: the change split into model and data parts.",
    )


class CohortSection(StrictModel):
    """A segmentation of the explained rows (``cohorts``): one segment per value of a categorical
    column (its ``max_values`` most frequent, the rest ``(other)``), or per bin of a numeric one
    (``bins``: the cut points). Rows with no value form ``(missing)``. The column is read from the
    explained input rows (the validated rows), so it may be a feature or any other input column."""

    column: str = Field(description="The input column that defines the segments.")
    bins: list[float] | None = Field(
        None,
        description="Cut points of a numeric column, increasing: [30, 50] gives '< 30', '[30, 50)', "
        "'>= 50'. Absent: one segment per value.",
    )
    max_values: int = Field(20, ge=1, le=1000, description="Most segments of a categorical column.")
    min_rows: int = Field(
        30, ge=1, description="Segments with fewer rows in a run are summarised but not tested for drift."
    )

    @model_validator(mode="after")
    def _bins_increase(self) -> CohortSection:
        bins = self.bins
        if bins is not None and (not bins or any(b <= a for a, b in zip(bins, bins[1:], strict=False))):
            raise ValueError(f"cohort {self.column!r}: bins must be a non-empty increasing list")
        return self


class QualitySection(StrictModel):
    """Whether a run's explanations can be trusted, measured on a sample of its rows; see
    :mod:`ig_airflow.quality`: deletion and insertion curves against a random and a
    permutation-importance order, infidelity and max-sensitivity (Yeh et al. 2019), and a
    model-randomisation check (Adebayo et al. 2018)."""

    enabled: bool = Field(True, description="Run the quality stage after IG (ig-airflow run, the DAGs).")
    sample_rows: int = Field(256, ge=8, le=100_000, description="Explained rows sampled for the metrics.")
    seed: int = Field(0, description="Seeds the sample, the random orders and every perturbation.")
    curve_points: int = Field(
        21, ge=3, le=1001, description="Points of the deletion/insertion curves (all features when fewer)."
    )
    min_gain_over_random: float = Field(
        0.0,
        description="The IG deletion AUC must be below the random order's (same rows) by more than this, "
        "at the lower end of the 95% confidence interval of the per-row difference (normalised output, "
        "0..1 scale); else the check fails.",
    )
    infidelity_samples: int = Field(16, ge=1, le=1024, description="Perturbations per row for infidelity.")
    infidelity_mask_probability: float = Field(
        0.25, gt=0, lt=1, description="Each feature set to its baseline with this probability (infidelity)."
    )
    sensitivity_samples: int = Field(
        8, ge=1, le=256, description="Perturbations per row for max-sensitivity."
    )
    sensitivity_radius: float = Field(
        0.02,
        gt=0,
        description="max-sensitivity: numeric features move uniformly within this fraction of their "
        "standard deviation in the sample (categorical features are not perturbed).",
    )
    sensitivity_rows: int = Field(64, ge=1, description="Rows of the sample used for max-sensitivity.")
    randomisation: bool = Field(True, description="Run the model-randomisation check.")
    max_randomised_correlation: float = Field(
        0.5,
        ge=-1,
        le=1,
        description="The model-randomisation check passes when the mean per-row Spearman correlation "
        "between the |attributions| of the model and of its re-initialised copy is below this.",
    )
    on_fail: Literal["fail", "warn"] = Field(
        "warn",
        description="fail: a failed check fails the stage (the Airflow task); warn: logged and recorded.",
    )


class OutputSection(StrictModel):
    """Where a run writes. A run is identified by its data partition, the model version (the
    artifact's checksum) and its run id; with ``run_folder`` each run gets its own folder under
    ``uri`` and no two runs ever write the same one (see :mod:`ig_airflow.identity`)."""

    uri: str = Field(
        description="The run folder (attributions/, manifest.json, ...); with run_folder, "
        "the root under which every run gets its own folder."
    )
    run_folder: str | None = Field(
        None,
        description="Each run's folder under uri, with ig_airflow's placeholders {partition} "
        "(data.partition as key=value, or 'all'), {model_version} and {run_id}, e.g. "
        "'ds={{ ds }}/model={model_version}/run={run_id}'.",
    )
    run_id: str = Field(
        "manual",
        min_length=1,
        description="This run's id: the Airflow run id (set by the operators), or ig-airflow run --run-id.",
    )
    partition: str | None = Field(
        None, description="The data partition this run explains, as recorded (default: from data.partition)."
    )


def distribution_conflict(ig: IGSection) -> str | None:
    """Why ``ig`` cannot run with ``baseline.kind: distribution`` (what is attributed against one
    baseline row only), or None."""
    if ig.layer_attributions:
        return (
            "ig.layer_attributions: not supported with baseline.kind: distribution (hidden layers are "
            "attributed against one baseline row); remove them or use kind: point"
        )
    if getattr(ig, "loss", None) is not None:
        return (
            "ig.loss: not supported with baseline.kind: distribution (loss attributions are computed "
            "against one baseline row); remove it or use kind: point"
        )
    return None


class RunConfig(StrictModel):
    model: ModelSection
    data: DataSection
    baseline: BaselineSection | None = Field(None, description="Default: the artifact's baseline.")
    ig: IGSection = IGSection()
    output: OutputSection
    validation: ValidationSection = ValidationSection()
    ray: RaySection = RaySection()
    drift: DriftSection = DriftSection()
    cohorts: list[CohortSection] = Field(
        default_factory=list,
        description="Segments of the explained rows summarised and compared on their own (summaries, "
        "drift): a categorical column, or a numeric one cut at bins.",
    )
    quality: QualitySection = QualitySection()

    @model_validator(mode="after")
    def _distribution_baseline(self) -> RunConfig:
        """Expected Gradients needs reference rows, and attributes the inputs only."""
        if self.baseline is None or self.baseline.kind != "distribution":
            return self
        if not self.data.reference_uri:
            raise ValueError("baseline.kind: distribution draws baselines from data.reference_uri; set it")
        conflict = distribution_conflict(self.ig)
        if conflict:
            raise ValueError(conflict)
        return self

    @model_validator(mode="after")
    def _loss_needs_labels(self) -> RunConfig:
        """Loss attributions need the label column (a point baseline: :func:`distribution_conflict`)."""
        if self.ig.loss is not None and not self.data.label_column:
            raise ValueError(f"ig.loss: {self.ig.loss} explains each row's loss; set data.label_column")
        return self

    def config_hash(self) -> str:
        """Hash of everything that changes the attributions: not paths to outputs, nor the settings
        of the stages after IG (quality, drift, cohorts), so that changing those reuses the shards."""
        payload = self.model_dump(mode="json")
        for section in ("output", "quality", "drift", "cohorts"):
            payload.pop(section, None)
        return sha256_json(payload)

    def require_rendered(self) -> None:
        """Raise :class:`ConfigError` when a section the IG stage reads still holds ``{{ }}``."""
        unresolved = self.unresolved_placeholders()
        if unresolved:
            raise ConfigError(f"unrendered placeholders in the run config: {unresolved}")

    def unresolved_placeholders(self, *sections: str) -> list[str]:
        """``key=value`` of every string still holding a ``{{ name }}`` placeholder, in the
        given sections (default: the ones the IG stage reads)."""
        sections = sections or ("model", "data", "baseline", "ig", "output", "ray")
        found: list[str] = []

        def walk(value: Any, path: str) -> None:
            if isinstance(value, str) and PLACEHOLDER.search(value):
                found.append(f"{path}={value!r}")
            elif isinstance(value, dict):
                for key, item in value.items():
                    walk(item, f"{path}.{key}" if path else str(key))
            elif isinstance(value, list):
                for i, item in enumerate(value):
                    walk(item, f"{path}[{i}]")

        dumped = self.model_dump(mode="json")
        for section in sections:
            walk(dumped.get(section), section)
        return found


def render_placeholders(value: Any, template_vars: dict[str, Any], path: str = "") -> Any:
    """Replace ``{{ name }}`` in every string of ``value`` with ``template_vars[name]``;
    names not in ``template_vars`` are left for a later renderer. A value that would bring a
    ``..`` path segment into a string (``ds=../../etc``) is refused naming the key."""
    if isinstance(value, str):
        return PLACEHOLDER.sub(
            lambda m: _placeholder_value(m.group(1), m.group(0), template_vars, path), value
        )
    if isinstance(value, dict):
        return {
            k: render_placeholders(v, template_vars, f"{path}.{k}" if path else str(k))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [render_placeholders(v, template_vars, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def _placeholder_value(name: str, original: str, template_vars: dict[str, Any], path: str) -> str:
    if name not in template_vars:
        return original
    text = str(template_vars[name])
    if ".." in re.split(r"[/\\]", text):
        raise ConfigError(f"{path}: placeholder {{{{ {name} }}}} = {text!r} would put '..' into a path")
    return text


def _format_errors(source: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "<root>"
        kind = err["type"]
        msg = "unknown key" if kind == "extra_forbidden" else err["msg"]
        if kind == "missing":
            msg = "required key is missing"
        lines.append(f"{source}: {path}: {msg}")
    return "invalid run config\n  " + "\n  ".join(lines)


def parse_run_config(
    raw: dict[str, Any], source: str = "<config>", template_vars: dict[str, Any] | None = None
) -> RunConfig:
    """Validate a config mapping (already parsed from YAML) into a :class:`RunConfig`."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping, got {type(raw).__name__}")
    if template_vars:
        try:
            raw = render_placeholders(raw, template_vars)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(source, exc)) from None


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses more than :data:`MAX_YAML_ALIASES` alias references."""

    aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_YAML_ALIASES:
                mark = self.peek_event().start_mark
                raise ConfigError(
                    f"line {mark.line + 1}: more than {MAX_YAML_ALIASES} YAML aliases (*anchor); "
                    "refusing a document that expands this much"
                )
        return super().compose_node(parent, index)


def read_config_mapping(path: str | Path) -> dict[str, Any]:
    """The YAML mapping in ``path``; unreadable, oversized and malformed files, and alias bombs,
    are refused naming the file (and the line), before anything else reads the config."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: {size} bytes; a run config may hold at most {MAX_CONFIG_BYTES}")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        raw = yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: malformed YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return raw or {}


def load_run_config(path: str | Path, template_vars: dict[str, Any] | None = None) -> RunConfig:
    """Read and validate a YAML run config; relative URIs stay relative to the working dir."""
    return parse_run_config(read_config_mapping(path), str(path), template_vars)
