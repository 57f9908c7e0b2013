"""ig_airflow: Integrated Gradients explanations as scheduled, distributed Airflow pipelines.

The library works without Airflow; see :func:`explain_dataframe`, :func:`run_explain`,
:func:`save_artifact`, :func:`load_artifact` and :func:`explain_prediction` (one row of a run).
Importing the package imports no framework: names load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it (loaded lazily: importing ig_airflow must not import torch)
_EXPORTS = {
    "explain_dataframe": "ig_airflow.run.explainer",
    "run_explain": "ig_airflow.run.local",
    "run_pipeline": "ig_airflow.pipeline",
    "load_artifact": "ig_airflow.artifacts",
    "save_artifact": "ig_airflow.artifacts",
    "explain_prediction": "ig_airflow.analysis.row_explanation",
    "load_run_config": "ig_airflow.config",
    "InputSpec": "ig_airflow.spec",
    "NumericFeature": "ig_airflow.spec",
    "CategoricalFeature": "ig_airflow.spec",
    "OutputSpec": "ig_airflow.spec",
    "Calibration": "ig_airflow.spec",
    "TopK": "ig_airflow.config",
    "RunLayout": "ig_airflow.layout",
    "FrameworkBackend": "ig_airflow.core.backend",
    "register_backend": "ig_airflow.core.backend",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ig_airflow' has no attribute {name!r}")
