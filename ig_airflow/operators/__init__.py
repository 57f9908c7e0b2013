"""Airflow operators, one per stage, thin over the library (Airflow 3 Task SDK)."""

from ig_airflow.operators.aggregate import AggregateAttributionsOperator
from ig_airflow.operators.approval import ModelApprovalOperator
from ig_airflow.operators.artifact import LoadModelArtifactOperator
from ig_airflow.operators.attribution import ComputeAttributionsOperator
from ig_airflow.operators.drift import SummariseDriftOperator
from ig_airflow.operators.quality import AssessQualityOperator
from ig_airflow.operators.validate import ValidateInputsOperator

__all__ = [
    "AggregateAttributionsOperator",
    "AssessQualityOperator",
    "ComputeAttributionsOperator",
    "LoadModelArtifactOperator",
    "ModelApprovalOperator",
    "SummariseDriftOperator",
    "ValidateInputsOperator",
]
