"""Input selection refused early and by name: a partition key the dataset lacks, a value its
type cannot hold, a glob that matches nothing, a file that is not Parquet."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ig_airflow.dataset import open_dataset
from ig_airflow.exceptions import ConfigError, InputDataError


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    for day in (1, 2):
        folder = tmp_path / "lake" / f"day={day}"
        folder.mkdir(parents=True)
        pq.write_table(pa.table({"x": [1.0, 2.0]}), folder / "part-0.parquet")
    return tmp_path / "lake"


def test_a_partition_the_dataset_cannot_have_is_refused_by_name(lake: Path) -> None:
    assert open_dataset(str(lake), {"day": "2"}).num_rows == 2  # day is typed int32 by discovery
    with pytest.raises(ConfigError, match=r"has no partition key 'ds'; columns: \['x', 'day'\]"):
        open_dataset(str(lake), {"ds": "2024-05-01"})
    with pytest.raises(ConfigError, match=r"data.partition.day: '\.\./etc' is not a int32"):
        open_dataset(str(lake), {"day": "../etc"})


def test_missing_or_foreign_files_are_named(lake: Path, tmp_path: Path) -> None:
    with pytest.raises(InputDataError, match="the pattern matches no file"):
        open_dataset(str(lake / "day=9" / "*.parquet"))
    with pytest.raises(InputDataError, match="input not found"):
        open_dataset(str(tmp_path / "nowhere"))
    (tmp_path / "notes.parquet").write_text("<script>alert(1)</script>")
    with pytest.raises(InputDataError, match="cannot read .*notes.parquet as Parquet"):
        open_dataset(str(tmp_path / "notes.parquet"))
