"""Framework-neutral artifact metadata (``ig_artifact.json``): the model's inputs with their
vocabularies, the output to explain, its calibration, the default baseline and file checksums.

Which framework and loader read the model file is recorded here as plain names; the backend
registered under that name (:mod:`ig_airflow.core.backend`) owns the rest.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, model_validator

from ig_airflow.config import TARGET_HELP, BaselineSection, StrictModel, Target
from ig_airflow.io import sha256_json

METADATA_FILE = "ig_artifact.json"
FORMAT_VERSION = 1
EXAMPLES_FILE = "examples.parquet"
EXPECTED_PREDICTION = "_expected_prediction"  # the examples' column of the user's predictions
OOV_TOKEN = "<OOV>"  # a categorical value that maps to the feature's out-of-vocabulary index


class NumericFeature(StrictModel):
    """A numeric column; the model sees ``(value - center) / scale`` (a scaler fitted outside the
    model, e.g. sklearn's ``StandardScaler``: ``center=mean_``, ``scale=scale_``). Attributions are
    reported for the raw column (IG does not change under a per-column affine map)."""

    name: str
    min: float | None = Field(None, description="Lowest valid value (validation range).")
    max: float | None = Field(None, description="Highest valid value (validation range).")
    center: float = Field(0.0, description="Subtracted before the model sees the value.")
    scale: float = Field(1.0, description="Divides the centred value (non-zero).")

    @model_validator(mode="after")
    def _check(self) -> NumericFeature:
        if self.scale == 0 or not math.isfinite(self.scale) or not math.isfinite(self.center):
            raise ValueError(f"numeric feature {self.name!r}: scale must be finite and non-zero")
        return self


class CategoricalFeature(StrictModel):
    """A categorical column and how the model indexes its values.

    By default known values take the indices other than ``oov_index`` in vocabulary order;
    ``indices`` gives each value's index explicitly (an index map). ``oov_index`` is where unseen
    values go: an index, ``"first"`` (0), ``"last"`` (after the known values) or ``None`` (the
    model has no such row: unseen values are refused, validation quarantines them). Use
    :meth:`from_index_map` or :meth:`from_pandas` to build one from what the model was trained
    with; a Keras model's ``StringLookup`` vocabulary is read from the model when saved.
    """

    name: str
    vocabulary: list[str] = Field(
        default_factory=list,
        description="Known values (index order unless indices is given); empty: read from the "
        "model's StringLookup/IntegerLookup layer when saved (Keras).",
    )
    indices: list[int] | None = Field(None, description="Index of each vocabulary value (an index map).")
    oov_index: int | None = Field(0, ge=0, description="Index of unseen values; None: the model has none.")
    embedding_layer: str | None = Field(
        None,
        description="Layer this feature is attributed at (its Embedding, or a one-hot lookup); "
        "not used when the model takes one dense tensor (inputs.calling: dense).",
    )
    input_encoding: Literal["index", "string"] = Field(
        "index",
        description="What the model takes: the value's index, or the raw string (a Keras model with "
        "a StringLookup inside; set when the vocabulary is read from it).",
    )

    @model_validator(mode="before")
    @classmethod
    def _oov_words(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("oov_index") in ("first", "last", "none"):
            data = dict(data)
            word = data["oov_index"]
            known = data.get("indices") or range(len(data.get("vocabulary") or []))
            data["oov_index"] = {"first": 0, "last": max(known, default=-1) + 1, "none": None}[word]
        return data

    @model_validator(mode="after")
    def _check(self) -> CategoricalFeature:
        if len(set(self.vocabulary)) != len(self.vocabulary):
            raise ValueError(f"vocabulary of {self.name!r} has duplicate values")
        if self.indices is not None:
            if len(self.indices) != len(self.vocabulary) or min(self.indices, default=0) < 0:
                raise ValueError(f"indices of {self.name!r}: one index >= 0 per vocabulary value")
            taken = [*self.indices, *([] if self.oov_index is None else [self.oov_index])]
            if len(set(taken)) != len(taken):
                raise ValueError(f"indices of {self.name!r}: two values (or a value and OOV) share an index")
        elif self.oov_index is not None and self.oov_index > len(self.vocabulary):
            raise ValueError(f"oov_index of {self.name!r} must be <= len(vocabulary)")
        return self

    @classmethod
    def from_index_map(
        cls, name: str, mapping: dict[Any, int], oov_index: int | str | None = None, **fields: Any
    ) -> CategoricalFeature:
        """From the value -> index map the model was trained with (``oov_index``: an index,
        ``"first"``, ``"last"`` or ``None``)."""
        items = sorted(mapping.items(), key=lambda kv: kv[1])
        return cls.model_validate(
            {
                "name": name,
                "vocabulary": [str(v) for v, _ in items],
                "indices": [int(i) for _, i in items],
                "oov_index": oov_index,
                **fields,
            }
        )

    @classmethod
    def from_pandas(
        cls, name: str, categories: Any, oov_index: int | str | None = None, **fields: Any
    ) -> CategoricalFeature:
        """From pandas category codes (``series.cat.codes``: the categories' positions; pandas
        gives unseen values -1, which no embedding has, so ``oov_index`` says where the model
        put them: ``None`` (nowhere: refused), ``"last"`` (index K) or an index)."""
        values = list(getattr(categories, "categories", categories))
        return cls.from_index_map(name, {str(v): i for i, v in enumerate(values)}, oov_index, **fields)

    def index_map(self) -> dict[str, int]:
        """Value -> model index (and :data:`OOV_TOKEN` -> ``oov_index`` where there is one)."""
        if self.indices is not None:
            mapping = dict(zip(self.vocabulary, self.indices, strict=True))
        else:
            free = [i for i in range(len(self.vocabulary) + 1) if i != self.oov_index]
            mapping = dict(zip(self.vocabulary, free, strict=False))
        if self.oov_index is not None:
            mapping[OOV_TOKEN] = self.oov_index
        return mapping

    def value_of_index(self) -> dict[int, str]:
        """Model index -> value (the OOV index -> :data:`OOV_TOKEN`)."""
        return {i: v for v, i in self.index_map().items()}

    @property
    def cardinality(self) -> int:
        """Rows the model's embedding (or one-hot block) needs: the largest index + 1."""
        return max(self.index_map().values(), default=-1) + 1


Calling = Literal["positional", "dict", "per_feature", "dense"]


class InputSpec(StrictModel):
    """The model's input columns (numeric, then categorical) and how the model takes them.

    ``calling``: ``positional`` (``model(x_num, x_cat)``; Keras ``model([x_num, x_cat])``),
    ``dict`` (``model({feature: tensor})``), ``per_feature`` (one tensor per feature: PyTorch
    ``model(*tensors)`` in spec order, Keras one ``Input`` per column matched by name) or
    ``dense`` (one float tensor: numeric columns then each categorical feature one-hot, or the
    order named by ``dense_columns``; a one-hot block's attributions are summed into its
    feature). Attributions are always reported per original column.
    """

    numeric: list[NumericFeature] = Field(default_factory=list)
    categorical: list[CategoricalFeature] = Field(default_factory=list)
    calling: Calling = "positional"
    feature_shape: Literal["column", "vector"] = Field(
        "column", description="dict/per_feature tensors: column [batch, 1] or vector [batch]."
    )
    dense_columns: list[str] | None = Field(
        None,
        description="dense: the tensor's columns in order, each a numeric feature's name or "
        "'<feature>=<value>' (a one-hot column; '<feature>=<OOV>' for the OOV index).",
    )

    @model_validator(mode="after")
    def _unique(self) -> InputSpec:
        names = self.feature_names
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"feature names appear twice: {dupes}")
        if self.dense_columns is not None:
            if self.calling != "dense":
                raise ValueError("dense_columns is for inputs.calling: dense")
            self.dense_layout()  # raises naming the column at fault
        return self

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.numeric] + [f.name for f in self.categorical]

    def dense_layout(self) -> tuple[list[int], list[dict[int, int]], int]:
        """Where each feature lands in the dense tensor: numeric column positions, per
        categorical feature ``{index: position}`` of its one-hot columns, and the width."""
        names = self.dense_columns
        if names is None:
            names = list(self.numeric_names)
            for feat in self.categorical:
                names += [
                    f"{feat.name}={v}" for v, _ in sorted(feat.index_map().items(), key=lambda kv: kv[1])
                ]
        numeric_pos = {f.name: -1 for f in self.numeric}
        onehot: dict[str, dict[int, int]] = {f.name: {} for f in self.categorical}
        maps = {f.name: f.index_map() for f in self.categorical}
        for position, column in enumerate(names):
            feature, eq, value = column.partition("=")
            if not eq and feature in numeric_pos and numeric_pos[feature] < 0:
                numeric_pos[feature] = position
            elif (
                eq
                and feature in maps
                and value in maps[feature]
                and maps[feature][value] not in onehot[feature]
            ):
                onehot[feature][maps[feature][value]] = position
            else:
                raise ValueError(
                    f"dense_columns[{position}] {column!r}: not a numeric feature, nor "
                    "'<categorical feature>=<vocabulary value>', or named twice"
                )
        missing = [n for n, p in numeric_pos.items() if p < 0]
        if missing:
            raise ValueError(f"dense_columns lacks numeric feature(s) {missing}")
        return (
            [numeric_pos[n] for n in self.numeric_names],
            [onehot[n] for n in self.categorical_names],
            len(names),
        )

    @property
    def numeric_names(self) -> list[str]:
        return [f.name for f in self.numeric]

    @property
    def categorical_names(self) -> list[str]:
        return [f.name for f in self.categorical]


class OutputSpec(StrictModel):
    """The model output that IG explains: which column(s), on which scale."""

    index: int | None = Field(
        None,
        ge=0,
        description="Column of the model output to explain (same as target: i); a model returning "
        "more than one column needs it or target (never column 0 by default).",
    )
    target: Target | None = Field(None, description=TARGET_HELP)
    classes: list[str] | None = Field(None, description="Names of the output columns (class names).")
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
