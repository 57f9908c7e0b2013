"""A 3-class model on one-hot inputs explained for each row's top 2 classes through the whole
pipeline (validation with Great Expectations, IG on an embedded Ray, aggregation, drift, the
report): one output row per (row, target), summaries per target, drift on each row's first."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
from torch import nn

from ig_airflow import save_artifact
from ig_airflow.analysis.row_explanation import explain_prediction
from ig_airflow.config import RunConfig
from ig_airflow.pipeline import run_pipeline

CLASSES = ["low", "mid", "high"]
SHAPES = ["circle", "square", "star"]


def rows(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "row_id": np.arange(n),
            "size": rng.normal(0, 1, n),
            "weight": rng.normal(0, 1, n),
            "shape": rng.choice(SHAPES, n),
        }
    )


def test_top_2_classes_through_the_pipeline(tmp_path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3)).eval()  # size, weight, one-hot
    save_artifact(
        model,
        str(tmp_path / "artifact"),
        inputs={
            "numeric": [{"name": "size"}, {"name": "weight"}],
            "categorical": [{"name": "shape", "vocabulary": SHAPES, "oov_index": None}],
            "calling": "dense",
        },
        output={"link": "softmax", "classes": CLASSES, "target": {"top_k": 2}},
    )
    reference, current = rows(300, 1), rows(300, 2)
    current.loc[0, "shape"] = "hexagon"  # quarantined by validation, with its reason
    for name, frame in {"reference": reference, "current": current}.items():
        frame.to_parquet(tmp_path / f"{name}.parquet", index=False)

    def config(name: str, reference_run: str | None) -> RunConfig:
        return RunConfig.model_validate(
            {
                "model": {"uri": str(tmp_path / "artifact")},
                "data": {"input_uri": str(tmp_path / f"{name}.parquet"), "id_columns": ["row_id"]},
                "baseline": {"numeric": "zero", "categorical": "oov"},
                "ig": {"n_steps": 16, "batch_rows": 128},
                "ray": {"num_workers": 2, "shard_rows": 128, "num_cpus": 2},
                "drift": {"reference_uri": reference_run},
                "output": {"uri": str(tmp_path / "runs" / name)},
            }
        )

    first = run_pipeline(config("reference", None))
    second = run_pipeline(config("current", str(tmp_path / "runs" / "reference" / "attributions")))
    assert first["rows"]["explained"] == 300 and second["rows"]["explained"] == 299

    explained = pq.read_table(tmp_path / "runs" / "current" / "attributions").to_pandas()
    assert len(explained) == 2 * 299
    assert explained.groupby("row_id")["target_rank"].apply(list).map(tuple).unique().tolist() == [(1, 2)]
    assert set(explained["target"]) <= set(CLASSES)
    first_choice = explained[explained["target_rank"] == 1]["prediction"].to_numpy()
    second_choice = explained[explained["target_rank"] == 2]["prediction"].to_numpy()
    assert (first_choice >= second_choice).all()  # top 2 in order of the model's scores
    attributions = explained[["attr__size", "attr__weight", "attr__shape"]].sum(axis=1)
    change = explained["prediction"] - explained["baseline_prediction"]
    assert explained["converged"].all() and np.allclose(attributions - change, explained["delta"])

    summary = pq.read_table(tmp_path / "runs" / "current" / "summary" / "feature_summary.parquet").to_pandas()
    counts = summary.groupby("target")["rows"].first()
    assert counts.sum() == 2 * 299 and set(counts.index) <= set(CLASSES)
    categories = pq.read_table(
        tmp_path / "runs" / "current" / "summary" / "category_summary.parquet"
    ).to_pandas()
    assert set(categories.columns) >= {"feature", "target", "value", "rows"}
    assert categories["rows"].sum() == 2 * 299 and set(categories["value"]) == set(SHAPES)
    assert second["drift"]["reference"].endswith("attributions")

    row = int(explained["row_id"].iloc[0])
    first_target = explained[(explained["row_id"] == row) & (explained["target_rank"] == 1)]["target"].item()
    second_target = explained[(explained["row_id"] == row) & (explained["target_rank"] == 2)]["target"].item()
    why = explain_prediction(str(tmp_path / "runs" / "current"), row)
    assert why.result["target"] == first_target and f"target {first_target} (rank 1)" in why.to_text()
    other = explain_prediction(str(tmp_path / "runs" / "current"), row, target=second_target)
    assert other.result["target_rank"] == 2
