"""Framework-neutral artifact metadata (``ig_artifact.json``): the model's inputs with their
vocabularies, the output to explain, its calibration, the default baseline and file checksums.

Which framework and loader read the model file is recorded here as plain names; the backend
registered under that name (:mod:`ig_airflow.core.backend`) owns the rest.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ig_airflow.config import BaselineSection, StrictModel
from ig_airflow.io import sha256_json

METADATA_FILE = "ig_artifact.json"
FORMAT_VERSION = 1
EXAMPLES_FILE = "examples.parquet"
EXPECTED_PREDICTION = "_expected_prediction"  # the examples' column of the user's predictions
OOV_TOKEN = "<OOV>"  # a categorical value that maps to the feature's out-of-vocabulary index


class NumericFeature(StrictModel):
    name: str
    min: float | None = Field(None, description="Lowest valid value (validation range).")
    max: float | None = Field(None, description="Highest valid value (validation range).")


class CategoricalFeature(StrictModel):
    name: str
    vocabulary: list[str] = Field(description="Known values; index order follows this list.")
    oov_index: int = Field(0, ge=0, description="Embedding row for unseen values.")
    embedding_layer: str = Field(description="Module path of the embedding this feature feeds.")

    @model_validator(mode="after")
    def _check(self) -> CategoricalFeature:
        if len(set(self.vocabulary)) != len(self.vocabulary):
            raise ValueError(f"vocabulary of {self.name!r} has duplicate values")
        if self.oov_index > len(self.vocabulary):
            raise ValueError(f"oov_index of {self.name!r} must be <= len(vocabulary)")
        return self

    def index_map(self) -> dict[str, int]:
        """Value -> embedding index: known values fill the indices other than ``oov_index``."""
        indices = [i for i in range(len(self.vocabulary) + 1) if i != self.oov_index]
        mapping = dict(zip(self.vocabulary, indices, strict=True))
        mapping[OOV_TOKEN] = self.oov_index
        return mapping

    @property
    def cardinality(self) -> int:
        return len(self.vocabulary) + 1


class InputSpec(StrictModel):
    """The model's input columns: numeric features, then categorical ones, in calling order."""

    numeric: list[NumericFeature] = Field(default_factory=list)
    categorical: list[CategoricalFeature] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> InputSpec:
        names = self.feature_names
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"feature names appear twice: {dupes}")
        return self

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.numeric] + [f.name for f in self.categorical]

    @property
    def numeric_names(self) -> list[str]:
        return [f.name for f in self.numeric]

    @property
    def categorical_names(self) -> list[str]:
        return [f.name for f in self.categorical]


class OutputSpec(StrictModel):
    index: int | None = Field(
        None,
        ge=0,
        description="Column of the model output to explain; required when the model returns more "
        "than one (a multi-column output is never explained by column 0 by default).",
    )
    explain: Literal["logit", "probability"] = "probability"
    link: Literal["sigmoid", "softmax"] = Field(
        "sigmoid", description="Logits -> probability when explain=probability."
    )


class Calibration(StrictModel):
    method: Literal["none", "platt", "temperature"] = "none"
    a: float = Field(1.0, description="Platt slope: p = sigmoid(a*z + b).")
    b: float = Field(0.0, description="Platt intercept.")
    temperature: float = Field(1.0, gt=0, description="p = softmax(z / T) (sigmoid for 1 logit).")


class ExampleCheck(StrictModel):
    """Rows the user's own code predicted (``examples.parquet``), re-run on every load."""

    file: str = Field(EXAMPLES_FILE, description="Parquet of the example rows and their predictions.")
    rows: int = Field(ge=1, description="How many example rows.")
    atol: float = Field(1e-4, ge=0, description="Absolute tolerance of the comparison.")
    rtol: float = Field(1e-4, ge=0, description="Relative tolerance of the comparison.")


class ArtifactMetadata(StrictModel):
    """The contents of ``ig_artifact.json``."""

    format_version: int = FORMAT_VERSION
    framework: str = Field(description="Name of the backend that owns the model file, e.g. 'pytorch'.")
    loader: str = Field(description="How that backend reads the file, e.g. 'state_dict', 'keras'.")
    model_file: str
    model_class: str | None = Field(None, description="'module:Class' for state_dict loading.")
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    custom_objects_module: str | None = Field(
        None, description="Importable module that registers Keras custom layers."
    )
    inputs: InputSpec
    output: OutputSpec = OutputSpec()
    calibration: Calibration = Calibration()
    baseline: BaselineSection | None = Field(
        None, description="Default baseline; none: from the reference data when a run has it, else zero/OOV."
    )
    files: dict[str, str] = Field(default_factory=dict, description="file name -> sha256")
    examples: ExampleCheck | None = Field(None, description="The calling contract's example rows.")
    created_at: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict)

    def checksum(self) -> str:
        """One hash over all file checksums and the metadata that changes attributions."""
        return sha256_json(self.model_dump(mode="json", exclude={"created_at"}))
