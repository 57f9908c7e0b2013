"""Validate inputs with Great Expectations."""

from __future__ import annotations

from typing import Any

from ig_airflow.operators.base import IGStageOperator


class ValidateInputsOperator(IGStageOperator):
    """Validate ``data.input_uri`` against the artifact's input spec (see
    :mod:`ig_airflow.validation`); pushes the validated and quarantine URIs and the counts.

    Example::

        validate = ValidateInputsOperator(
            task_id="validate", config_path="configs/run.yaml",
            overrides={"validation": {"policy": "skip"}},
        )
    """

    def run_stage(self, context: Any) -> dict[str, Any]:
        from ig_airflow.validation import run_validation

        report = run_validation(self.run_config(context))
        return {"rows": report["rows"], "mapped": report["mapped"], **report["outputs"]}
