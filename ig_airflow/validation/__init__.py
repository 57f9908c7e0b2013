"""The validation stage (Great Expectations): every input row validated or quarantined with its
reason. See :mod:`ig_airflow.validation.stage`."""

from ig_airflow.validation.stage import (
    REASON_COLUMN,
    ROW_NUMBER_COLUMN,
    ValidationOutcome,
    run_validation,
    validate_inputs,
    validate_table,
)

__all__ = [
    "REASON_COLUMN",
    "ROW_NUMBER_COLUMN",
    "ValidationOutcome",
    "run_validation",
    "validate_inputs",
    "validate_table",
]
