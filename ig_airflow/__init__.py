"""ig_airflow: Integrated Gradients explanations as scheduled, distributed Airflow pipelines.

The library works without Airflow; see :func:`explain_dataframe`, :func:`run_explain`,
:func:`save_artifact`, :func:`load_artifact` and :func:`explain_prediction` (one row of a run).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "explain_dataframe",
    "explain_prediction",
    "load_artifact",
    "load_run_config",
    "run_explain",
    "save_artifact",
]


def __getattr__(name: str) -> Any:  # lazy: importing the package must not import torch
    if name in ("explain_dataframe", "run_explain"):
        from ig_airflow import explain

        return getattr(explain, name)
    if name in ("load_artifact", "save_artifact"):
        from ig_airflow import artifacts

        return getattr(artifacts, name)
    if name == "explain_prediction":
        from ig_airflow.row_explanation import explain_prediction

        return explain_prediction
    if name == "load_run_config":
        from ig_airflow.config import load_run_config

        return load_run_config
    raise AttributeError(f"module 'ig_airflow' has no attribute {name!r}")
