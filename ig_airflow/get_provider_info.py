"""Airflow provider metadata (entry point ``apache_airflow_provider``)."""

from __future__ import annotations

from typing import Any

# Airflow's [ig_airflow] section (airflow.cfg, or AIRFLOW__IG_AIRFLOW__<OPTION>)
CONFIG: dict[str, Any] = {
    "ig_airflow": {
        "description": "ig_airflow settings (environment variables also work).",
        "options": {
            "trusted_modules": {
                "description": "Comma-separated modules whose classes a model artifact may "
                "name (model_class, custom_objects_module), with their submodules; empty: "
                "none (env IG_AIRFLOW_TRUSTED_MODULES works too). See SECURITY.md.",
                "version_added": "0.1.0",
                "type": "string",
                "example": "mycompany.models,ig_airflow.demo",
                "default": "",
            },
            "ui_roots": {
                "description": "Comma-separated folders (paths or fsspec URIs) the explanation "
                "views in the Airflow UI may read run folders under; empty: the run folders this "
                "deployment's ig_airflow tasks recorded, wherever they are. See SECURITY.md.",
                "version_added": "0.2.0",
                "type": "string",
                "example": "s3://ml-explanations/runs,/data/ig/runs",
                "default": "",
            },
            "demo_dir": {
                "description": "Where the example DAGs keep demo data and outputs (env IG_AIRFLOW_DEMO_DIR).",
                "version_added": "0.1.0",
                "type": "string",
                "example": "/opt/airflow/ig_demo",
                "default": "demo_output",
            },
        },
    }
}


def get_provider_info() -> dict[str, Any]:
    from ig_airflow import __version__

    return {
        "package-name": "ig-airflow",
        "name": "Integrated Gradients (ig_airflow)",
        "description": "Integrated Gradients explanations for PyTorch and TensorFlow models: "
        "artifact loading, Great Expectations validation, IG on Ray, aggregation and drift.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Integrated Gradients",
                "external-doc-url": "https://arxiv.org/abs/1703.01365",
                "tags": ["software"],
            }
        ],
        "operators": [
            {
                "integration-name": "Integrated Gradients",
                "python-modules": [
                    "ig_airflow.operators.artifact",
                    "ig_airflow.operators.validate",
                    "ig_airflow.operators.attribution",
                    "ig_airflow.operators.aggregate",
                    "ig_airflow.operators.quality",
                    "ig_airflow.operators.drift",
                ],
            }
        ],
        "config": CONFIG,
    }
