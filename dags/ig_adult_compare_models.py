"""Explain the same rows with the current production model and a candidate, summarise how the
candidate's reasoning differs (NDCG@k, rank correlation, per-feature distribution shift), and
gate the candidate's promotion on that drift.

``publish_versions`` -> ``production/`` and ``candidate/`` (validate -> IG -> aggregate) ->
``drift_candidate_vs_production`` -> ``approve_candidate`` -> ``promote_candidate`` | ``keep_current``

The model registry (``{demo_dir}/registry/adult_torch``, :mod:`ig_airflow.promotion`) holds the
"current model" pointer (``current.json``) and every decision (``decisions.json``); its first run
points it at a model trained with seed 0. Each run explains the model the pointer names and a
candidate trained with seed ``dag_run.conf["seed"]`` (default 1; ``versions/seed=<seed>/``).
No drift alert: the candidate is promoted automatically. An alert: ``approve_candidate`` waits in
the Airflow UI (Required actions) with the alerts and a link to the report; Approve moves the
pointer to the candidate, Reject keeps production and records who rejected it and why.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG, Param, TaskGroup, XComArg, task

from ig_airflow.operators import (
    AggregateAttributionsOperator,
    ComputeAttributionsOperator,
    ModelApprovalOperator,
    SummariseDriftOperator,
    ValidateInputsOperator,
)

DEMO_DIR = os.path.abspath(os.environ.get("IG_AIRFLOW_DEMO_DIR", Path(__file__).parents[1] / "demo_output"))
CONFIG = str(Path(__file__).parent / "configs" / "compare_models.yaml")
REGISTRY = str(Path(DEMO_DIR, "registry", "adult_torch"))
PRODUCTION_SEED = 0  # the registry's first production model


def stage_vars(version: str) -> dict[str, str]:
    """The config's placeholders for ``version`` ("production" or "candidate"): its artifact is
    the one publish_versions returned (rendered by Airflow when the task runs)."""
    uri = f"{{{{ ti.xcom_pull(task_ids='publish_versions')['{version}'] }}}}"
    return {"demo_dir": DEMO_DIR, "model_version": version, "model_uri": uri}


def trained(seed: int) -> str:
    """The demo model trained with ``seed``, published once under the registry's versions/."""
    import pandas as pd

    from ig_airflow.demo.prepare import prepare_demo, train_demo_torch
    from ig_airflow.spec import METADATA_FILE

    folder = Path(REGISTRY, "versions", f"seed={seed}")
    if not (folder / METADATA_FILE).exists():
        if not Path(DEMO_DIR, "data", "adult_train.parquet").exists():
            prepare_demo(DEMO_DIR)
        train_demo_torch(pd.read_parquet(Path(DEMO_DIR, "data", "adult_train.parquet")), folder, seed=seed)
    return str(folder)


with DAG(
    dag_id="ig_adult_compare_models",
    description="Attribution drift between the production and a candidate Adult model, gating its promotion",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    params={"seed": Param(1, type="integer", minimum=0, description="The candidate's training seed.")},
    tags=["ig_airflow", "demo"],
):

    @task
    def publish_versions(params: dict | None = None, run_id: str | None = None) -> dict[str, str]:
        """Demo stand-in for a model registry: production = the current model (first run: seed 0),
        candidate = the model trained with the run's seed."""
        from ig_airflow.promotion import current_model, initialise

        production = current_model(REGISTRY, verify=True) or initialise(
            REGISTRY,
            trained(PRODUCTION_SEED),
            by="publish_versions",
            reason=f"the first production model (seed {PRODUCTION_SEED})",
            run_id=str(run_id),
        )
        candidate = trained(int((params or {}).get("seed", 1)))
        return {"registry": REGISTRY, "production": production["uri"], "candidate": candidate}

    versions = publish_versions()
    summaries = []
    for version in ("production", "candidate"):
        stage = {"config_path": CONFIG, "template_vars": stage_vars(version)}
        with TaskGroup(group_id=version) as group:
            (
                ValidateInputsOperator(task_id="validate", **stage)
                >> ComputeAttributionsOperator(task_id="compute_ig", **stage)
                >> AggregateAttributionsOperator(task_id="aggregate", **stage)
            )
        summaries.append(group)

    drift = SummariseDriftOperator(
        task_id="drift_candidate_vs_production",
        config_path=CONFIG,
        template_vars=stage_vars("candidate"),
    )
    approval = ModelApprovalOperator(
        task_id="approve_candidate",
        drift_task_id=drift.task_id,
        promote_task_id="promote_candidate",
        keep_task_id="keep_current",
    )

    @task
    def promote_candidate(versions: dict, decision: dict, run_id: str | None = None) -> dict:
        """Move the pointer to the candidate and record who approved it (or that no alert did)."""
        from ig_airflow.promotion import apply_decision

        return apply_decision(versions["registry"], versions["candidate"], decision, run_id=str(run_id))

    @task
    def keep_current(versions: dict, decision: dict, run_id: str | None = None) -> dict:
        """Keep the current model; record who rejected the candidate, why, and its alerts."""
        from ig_airflow.promotion import apply_decision

        return apply_decision(versions["registry"], versions["candidate"], decision, run_id=str(run_id))

    decision = XComArg(approval, key="decision")
    versions >> summaries >> drift >> approval
    approval >> [promote_candidate(versions, decision), keep_current(versions, decision)]
