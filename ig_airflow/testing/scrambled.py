"""Deliberately wrong explanations, for the quality stage's tests: a committed run whose
attributions are shuffled across features within each row (the same values, the same
completeness, no relation to the model any more)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ig_airflow.dataset import open_dataset
from ig_airflow.io import read_parquet, write_parquet
from ig_airflow.layout import RunLayout
from ig_airflow.results import attribution_column, attribution_features


def scramble_attributions(run_uri: str, seed: int = 0) -> int:
    """Shuffle each row's attributions across its features in every part of the run's
    attributions dataset, in place; returns the rows scrambled."""
    rng = np.random.default_rng(seed)
    dataset = open_dataset(RunLayout(run_uri).attributions)
    rows = 0
    for part in dataset.files:
        table = read_parquet(part)
        columns = [attribution_column(f) for f in attribution_features(table.column_names)]
        values = np.column_stack([table.column(c).to_numpy() for c in columns])
        order = np.argsort(rng.random(values.shape), axis=1)
        shuffled = np.take_along_axis(values, order, axis=1)
        for j, column in enumerate(columns):
            index = table.column_names.index(column)
            table = table.set_column(index, column, pa.array(shuffled[:, j], table.schema.field(column).type))
        write_parquet(part, table)
        rows += table.num_rows
    return rows
