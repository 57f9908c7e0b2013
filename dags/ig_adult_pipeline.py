"""Retrain the Adult model and publish its artifact; explain it after every publication and
every night: load -> validate -> IG on Ray -> aggregate -> quality -> drift.

``ig_adult_retrain`` publishes the model-artifact Asset; ``ig_adult_explain`` runs when that
Asset is updated or at 03:00 UTC, and publishes the attributions, quality and drift Assets, their
events carrying the run's results (rows explained and quarantined, converged share, model version;
the quality checks and deletion/insertion AUCs; drift alerts, top features). Data and outputs
live under ``IG_AIRFLOW_DEMO_DIR`` (default: ``demo_output`` beside ``dags/``); the retrain's
seed is the run conf's ``seed`` or ``IG_AIRFLOW_DEMO_SEED`` (default 0: another seed publishes
another model version). Each
explain run writes its own folder, ``runs/explain/ds=<ds>/model=<version>/run=<run id>/``.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG, Asset, AssetOrTimeSchedule, CronTriggerTimetable, task

from ig_airflow.operators import (
    AggregateAttributionsOperator,
    AssessQualityOperator,
    ComputeAttributionsOperator,
    LoadModelArtifactOperator,
    SummariseDriftOperator,
    ValidateInputsOperator,
)

DEMO_DIR = os.path.abspath(os.environ.get("IG_AIRFLOW_DEMO_DIR", Path(__file__).parents[1] / "demo_output"))
CONFIG = str(Path(__file__).parent / "configs" / "explain_adult.yaml")
MODEL_ASSET = Asset(name="ig_airflow.adult.model", uri=f"file://{DEMO_DIR}/artifacts/adult_torch")
ATTRIBUTIONS_ASSET = Asset(name="ig_airflow.adult.attributions", uri=f"file://{DEMO_DIR}/runs/explain")
QUALITY_ASSET = Asset(name="ig_airflow.adult.quality", uri=f"file://{DEMO_DIR}/runs/explain/quality")
DRIFT_ASSET = Asset(name="ig_airflow.adult.drift", uri=f"file://{DEMO_DIR}/runs/explain/history.parquet")

with DAG(
    dag_id="ig_adult_retrain",
    description="Train the Adult model and publish it as an ig_airflow artifact",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    tags=["ig_airflow", "demo"],
):

    @task(outlets=[MODEL_ASSET])
    def train_and_publish() -> dict:
        """Write the demo data, train the model and publish the artifact (one library call); the
        seed from the run's conf (``{"seed": 1}``), else ``IG_AIRFLOW_DEMO_SEED``, else 0."""
        from airflow.sdk import get_current_context

        from ig_airflow.artifacts import read_metadata
        from ig_airflow.demo.prepare import prepare_demo

        conf = get_current_context()["dag_run"].conf or {}
        seed = int(conf.get("seed", os.environ.get("IG_AIRFLOW_DEMO_SEED", "0")))
        paths = prepare_demo(DEMO_DIR, seed=seed)
        return {"artifact": paths["artifact"], "checksum": read_metadata(paths["artifact"]).checksum()}

    train_and_publish()


with DAG(
    dag_id="ig_adult_explain",
    description="Explain the Adult model: validate, IG on Ray, aggregate, drift",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 3 * * *", timezone="UTC"), assets=[MODEL_ASSET]
    ),
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=5)},
    tags=["ig_airflow", "demo"],
):
    stage = {"config_path": CONFIG, "template_vars": {"demo_dir": DEMO_DIR}}
    (
        LoadModelArtifactOperator(task_id="load_model", **stage)
        >> ValidateInputsOperator(task_id="validate", **stage)
        >> ComputeAttributionsOperator(task_id="compute_ig", outlets=[ATTRIBUTIONS_ASSET], **stage)
        >> AggregateAttributionsOperator(task_id="aggregate", **stage)
        >> AssessQualityOperator(task_id="quality", outlets=[QUALITY_ASSET], **stage)
        >> SummariseDriftOperator(task_id="drift", outlets=[DRIFT_ASSET], **stage)
    )
