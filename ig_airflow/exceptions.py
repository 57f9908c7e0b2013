"""Errors raised by ig_airflow. Every message names the file, key, column or row at fault."""


class IGAirflowError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(IGAirflowError):
    """The run configuration (YAML) is malformed, has unknown keys or wrong types."""


class ArtifactError(IGAirflowError):
    """A model artifact is missing files, fails its checksums, or cannot be loaded safely."""


class InputDataError(IGAirflowError):
    """Input data does not match the model's input spec (missing column, bad dtype, ...)."""


class ModelCallError(IGAirflowError):
    """The model failed on the run's first rows: a deterministic error that no retry fixes."""


class DriftAlert(IGAirflowError):
    """Attribution drift crossed a configured threshold (raised when ``drift.on_alert: fail``)."""


class QualityCheckFailed(IGAirflowError):
    """A quality check of a run's explanations failed (raised when ``quality.on_fail: fail``)."""


class StorageError(IGAirflowError):
    """Writing an output failed (disk full, permissions); nothing partial is left behind."""


class ValidationFailed(IGAirflowError):
    """Input validation found rows that the run's policy says must fail the run.

    ``outcome`` holds the validation report and GX result when validation ran that far.
    """

    def __init__(self, message: str, outcome: object | None = None):
        super().__init__(message)
        self.outcome = outcome


# Errors that a retry cannot fix: Airflow fails the task at once instead of retrying it.
DETERMINISTIC_ERRORS: tuple[type[IGAirflowError], ...] = (
    ConfigError,
    ArtifactError,
    InputDataError,
    ValidationFailed,
    ModelCallError,
    DriftAlert,
    QualityCheckFailed,
)
