"""Explain the same rows with the production model and a candidate, and summarise how the
candidate's reasoning differs (NDCG@k, rank correlation, per-feature distribution shift)."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG, TaskGroup, task

from ig_airflow.operators import (
    AggregateAttributionsOperator,
    ComputeAttributionsOperator,
    SummariseDriftOperator,
    ValidateInputsOperator,
)

DEMO_DIR = os.path.abspath(os.environ.get("IG_AIRFLOW_DEMO_DIR", Path(__file__).parents[1] / "demo_output"))
CONFIG = str(Path(__file__).parent / "configs" / "compare_models.yaml")

with DAG(
    dag_id="ig_adult_compare_models",
    description="Attribution drift between the production and a candidate Adult model",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    tags=["ig_airflow", "demo"],
):

    @task
    def publish_versions() -> dict:
        """Demo stand-in for a model registry: production = seed 0, candidate = seed 1."""
        import pandas as pd

        from ig_airflow.demo.prepare import prepare_demo, train_demo_torch

        paths = prepare_demo(DEMO_DIR) if not Path(DEMO_DIR, "data", "adult_train.parquet").exists() else None
        train = pd.read_parquet(Path(DEMO_DIR, "data", "adult_train.parquet"))
        for version, seed in (("production", 0), ("candidate", 1)):
            train_demo_torch(train, Path(DEMO_DIR, "artifacts", f"adult_torch_{version}"), seed=seed)
        return {"prepared": bool(paths)}

    summaries = []
    for version in ("production", "candidate"):
        stage = {"config_path": CONFIG, "template_vars": {"demo_dir": DEMO_DIR, "model_version": version}}
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
        template_vars={"demo_dir": DEMO_DIR, "model_version": "candidate"},
    )
    publish_versions() >> summaries >> drift
