"""Input as it lives in a lake (issue 17): a Hive-partitioned dataset of several files per
partition, one partition explained through the whole pipeline (Great Expectations, Ray, drift,
report). The other partitions are never read: one of them is not even Parquet any more, which
any read would trip on. Every input row is accounted for (explained + quarantined), and the
output is read back by DuckDB, which knows nothing of ig_airflow."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from ig_airflow import save_artifact
from ig_airflow.analysis.row_explanation import explain_prediction
from ig_airflow.config import RunConfig
from ig_airflow.dataset import open_dataset
from ig_airflow.exceptions import InputDataError
from ig_airflow.pipeline import run_pipeline

COLORS = ["red", "green", "blue"]
DAYS = ["2024-05-01", "2024-05-02", "2024-05-03"]


class ShapeNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.color = nn.Embedding(4, 3)
        self.mlp = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 1))

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([x_num, self.color(x_cat[:, 0])], dim=1)).squeeze(-1)


def write_lake(root: Path) -> dict[str, pd.DataFrame]:
    """Three daily partitions of three files each; a few bad rows in the middle day; the last
    day's files are damaged (not Parquet), so reading them would fail the run."""
    rng = np.random.default_rng(0)
    days = {}
    for d, day in enumerate(DAYS):
        frame = pd.DataFrame(
            {
                "row_id": np.arange(d * 1000, d * 1000 + 150),
                "size": rng.normal(size=150),
                "weight": rng.normal(size=150),
                "color": rng.choice(COLORS, 150),
            }
        )
        if day == "2024-05-02":
            frame.loc[[3, 77], "color"] = "purple"  # quarantined by validation
        days[day] = frame
        folder = root / f"ds={day}"
        folder.mkdir(parents=True)
        for part, start in enumerate(range(0, 150, 50)):
            chunk = frame.iloc[start : start + 50]
            path = folder / f"part-{part}.parquet"
            chunk.to_parquet(path, index=False)
            if day == DAYS[-1]:
                path.write_bytes(b"not parquet: a partition nobody asked for")
    return days


def test_one_partition_of_a_hive_dataset_through_the_pipeline(tmp_path: Path) -> None:
    days = write_lake(tmp_path / "lake")
    torch.manual_seed(0)
    spec = {
        "numeric": [{"name": "size"}, {"name": "weight"}],
        "categorical": [{"name": "color", "vocabulary": COLORS, "embedding_layer": "color"}],
    }
    save_artifact(ShapeNet().eval(), str(tmp_path / "artifact"), inputs=spec, loader="torch_export")
    selected = open_dataset(str(tmp_path / "lake"), {"ds": "2024-05-02"})
    assert [Path(f).parent.name for f in selected.files] == ["ds=2024-05-02"] * 3  # pruned by the filter
    config = RunConfig.model_validate(
        {
            "model": {"uri": str(tmp_path / "artifact")},
            "data": {
                "input_uri": str(tmp_path / "lake"),
                "partition": {"ds": "2024-05-02"},
                "id_columns": ["row_id"],
            },
            "ig": {"n_steps": 16, "batch_rows": 64},
            "ray": {"num_workers": 2, "shard_rows": 64, "num_cpus": 2},
            "output": {"uri": str(tmp_path / "runs" / "ds=2024-05-02")},
        }
    )
    manifest = run_pipeline(config)
    counts = manifest["validation"]["rows"]
    assert (counts["input"], counts["validated"], counts["quarantined"]) == (150, 148, 2)
    assert manifest["input"]["rows"] == 148  # IG read the validated rows

    run = tmp_path / "runs" / "ds=2024-05-02"
    explained = duckdb.sql(f"select row_id from read_parquet('{run}/attributions/*.parquet')").fetchall()
    quarantined = duckdb.sql(
        f"select row_id from read_parquet('{run}/validation/quarantine/*.parquet')"
    ).fetchall()
    assert len(explained) == 148 and len(quarantined) == 2
    parts = sorted(p.name for p in (run / "attributions").iterdir())  # one file per shard of 64 rows
    assert parts == ["_SUCCESS", "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    ids = sorted(r[0] for r in explained + quarantined)
    assert ids == sorted(days["2024-05-02"]["row_id"])  # every input row, explained or quarantined
    assert [r[0] for r in explained] == [i for i in days["2024-05-02"]["row_id"] if i not in (1003, 1077)]

    why = explain_prediction(str(run), 1010)
    assert why.status == "explained" and why.contributions["value"].notna().all()
    assert explain_prediction(str(run), 1077).status == "quarantined"


def test_globs_directories_and_schema_differences(tmp_path: Path) -> None:
    write_lake(tmp_path / "lake")
    by_glob = open_dataset(str(tmp_path / "lake" / "ds=2024-05-0[12]" / "*.parquet"))
    assert by_glob.num_rows == 300 and by_glob.partition_columns == ["ds"]
    assert by_glob.read_rows(148, 152, ["row_id", "ds"]).to_pydict() == {
        "row_id": [148, 149, 1000, 1001],
        "ds": ["2024-05-01", "2024-05-01", "2024-05-02", "2024-05-02"],
    }
    odd = tmp_path / "lake" / "ds=2024-05-02" / "part-9.parquet"
    pd.DataFrame({"row_id": [1], "size": ["big"], "weight": [1.0], "color": ["red"]}).to_parquet(odd)
    with pytest.raises(
        InputDataError, match=r"part-9.parquet: schema differs.*size \(double in .*, (large_)?string here\)"
    ):
        open_dataset(str(tmp_path / "lake"), {"ds": "2024-05-02"})
    with pytest.raises(InputDataError, match="no Parquet files in partition"):
        open_dataset(str(tmp_path / "lake"), {"ds": "2024-06-01"})
