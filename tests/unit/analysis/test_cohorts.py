"""Cohorts: segments of a categorical column (its most frequent values, the rest "other") or
of a numeric one cut at bins, read from the explained rows; their summaries add up to the
global summary (rows, and means weighted by rows), and inputs that are not the explained rows
are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ig_airflow.analysis.aggregation import feature_summary
from ig_airflow.analysis.cohorts import (
    MISSING,
    OTHER,
    cohort_summary,
    explained_inputs,
    summarise_cohorts,
)
from ig_airflow.config import CohortSection
from ig_airflow.dataset import open_dataset
from ig_airflow.exceptions import InputDataError
from ig_airflow.io import read_json, write_json, write_parquet
from ig_airflow.layout import RunLayout, SummaryLayout

ROWS = 30_000
COHORTS = [CohortSection(column="color", max_values=3), CohortSection(column="size", bins=[0.0, 1.0])]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[str, str]:
    """A run folder whose attributions depend on the segment (a manifest names its input)."""
    tmp = tmp_path_factory.mktemp("cohorts")
    rng = np.random.default_rng(0)
    colors = rng.choice(["red", "green", "blue", "teal", "plum"], p=[0.4, 0.3, 0.2, 0.06, 0.04], size=ROWS)
    color = pa.array([None if i % 97 == 0 else c for i, c in enumerate(colors)], pa.string())
    size = rng.normal(size=ROWS)
    size[::101] = np.nan
    inputs = pa.table({"row_id": np.arange(ROWS), "color": color, "size": size})
    write_parquet(str(tmp / "inputs.parquet"), inputs)
    layout = RunLayout(str(tmp / "run"))
    red = np.array([c == "red" for c in colors])
    attributions = {
        "row_id": np.arange(ROWS),
        "attr__x": rng.normal(size=ROWS) * np.where(red, 3.0, 1.0),  # x matters most for red
        "attr__y": rng.normal(size=ROWS) * np.where(np.nan_to_num(size) > 1, 2.0, 0.5),
        "prediction": rng.random(ROWS),
    }
    write_parquet(layout.attributions, pa.table(attributions))
    write_json(layout.manifest, {"input_uri": str(tmp / "inputs.parquet"), "input": {"partition": {}}})
    return str(tmp / "run"), layout.attributions


def test_segments_sum_to_the_global_summary(run) -> None:
    folder, attributions = run
    inputs = explained_inputs(attributions)
    assert inputs is not None and inputs.uri.endswith("inputs.parquet")
    frame = cohort_summary(attributions, inputs, COHORTS, resamples=200)
    overall = feature_summary(attributions).set_index("feature")
    for cohort, group in frame.groupby("cohort"):
        segments = group.drop_duplicates("segment")
        assert segments["rows"].sum() == ROWS, cohort
        weighted = (group["rows"] * group["mean_abs_attribution"]).groupby(group["feature"]).sum() / ROWS
        signed = (group["rows"] * group["mean_attribution"]).groupby(group["feature"]).sum() / ROWS
        np.testing.assert_allclose(weighted, overall.loc[weighted.index, "mean_abs_attribution"], rtol=1e-12)
        np.testing.assert_allclose(
            signed, overall.loc[signed.index, "mean_attribution"], rtol=1e-9, atol=1e-15
        )
        assert np.allclose(group.groupby("segment")["share"].sum(), 1.0)
    colors = frame[frame["cohort"] == "color"].drop_duplicates("segment")
    assert list(colors["segment"]) == ["red", "green", "blue", OTHER, MISSING]  # by frequency
    assert colors.set_index("segment").at[MISSING, "rows"] == len(range(0, ROWS, 97))
    sizes = frame[frame["cohort"] == "size"].drop_duplicates("segment")
    assert list(sizes["segment"]) == ["< 0", "[0, 1)", ">= 1", MISSING]  # bin by bin
    assert sizes.set_index("segment").at[MISSING, "rows"] == len(range(0, ROWS, 101))


def test_segment_importance_and_intervals_find_what_differs(run) -> None:
    _, attributions = run
    frame = cohort_summary(attributions, explained_inputs(attributions), COHORTS, resamples=200)
    frame = frame.set_index(["cohort", "segment", "feature"])
    red, green = frame.loc[("color", "red", "x")], frame.loc[("color", "green", "x")]
    assert red["mean_abs_attribution"] == pytest.approx(3 * np.sqrt(2 / np.pi), rel=0.03)
    assert red["mean_abs_ci_low"] < red["mean_abs_attribution"] < red["mean_abs_ci_high"]
    assert green["mean_abs_ci_high"] < red["mean_abs_ci_low"]  # the intervals tell them apart
    assert frame.loc[("size", ">= 1", "y"), "rank"] == 1 and frame.loc[("size", "< 0", "y"), "rank"] == 2


def test_summarise_cohorts_adds_to_summary_json(run) -> None:
    folder, attributions = run
    root = RunLayout(folder).summary.root
    write_json(SummaryLayout(root).json, {"features": 2, "outputs": {"feature_summary": "f"}})
    result = summarise_cohorts(attributions, root, explained_inputs(attributions), COHORTS)
    assert read_json(SummaryLayout(root).json) == result
    assert result["features"] == 2 and set(result["outputs"]) == {"feature_summary", "cohort_summary"}
    assert sum(result["cohorts"]["size"].values()) == ROWS and list(result["cohorts"]["color"])[0] == "red"
    assert len(pd.read_parquet(result["outputs"]["cohort_summary"])) == (5 + 4) * 2


def test_inputs_that_are_not_the_explained_rows_are_refused(run, tmp_path: Path) -> None:
    _, attributions = run
    inputs = open_dataset(explained_inputs(attributions).uri).read_table()
    shuffled = inputs.take(np.random.default_rng(1).permutation(ROWS))
    write_parquet(str(tmp_path / "shuffled.parquet"), shuffled)
    with pytest.raises(InputDataError, match="row_id"):
        cohort_summary(attributions, open_dataset(str(tmp_path / "shuffled.parquet")), COHORTS)
    write_parquet(str(tmp_path / "short.parquet"), inputs.slice(0, 100))
    with pytest.raises(InputDataError, match="100 rows"):
        cohort_summary(attributions, open_dataset(str(tmp_path / "short.parquet")), COHORTS)
    with pytest.raises(InputDataError, match="nowhere"):
        cohort_summary(attributions, explained_inputs(attributions), [CohortSection(column="nowhere")])
