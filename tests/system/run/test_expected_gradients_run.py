"""Expected Gradients through the real pipeline on an embedded Ray: the standard-error columns in
the attributions dataset, the baseline settings in the manifest, the stages after IG unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ig_airflow.config import parse_run_config
from ig_airflow.pipeline import run_pipeline


@pytest.fixture(scope="module", autouse=True)
def embedded_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def test_distribution_baseline_run_on_ray(demo, tmp_path: Path) -> None:
    rows = tmp_path / "rows.parquet"
    pd.read_parquet(demo["test"]).head(40).to_parquet(rows, index=False)
    raw = yaml.safe_load(Path(demo["config"]).read_text())
    raw["data"]["input_uri"] = str(rows)
    raw["output"]["uri"] = str(tmp_path / "run")
    raw["baseline"] = {"kind": "distribution", "samples": 8, "pool_rows": 200, "seed": 3}
    raw["ig"] = {"batch_rows": 20, "n_steps": 9, "method": "adaptive_trapezoid"}
    raw["ray"] = {"num_workers": 2, "shard_rows": 20}
    raw["validation"] = {"enabled": False}
    raw["quality"] = {"sample_rows": 8, "sensitivity_rows": 2, "sensitivity_samples": 1}
    manifest = run_pipeline(parse_run_config(raw))

    out = pd.read_parquet(tmp_path / "run" / "attributions").sort_values("row_id")
    features = [c[len("attr__") :] for c in out.columns if c.startswith("attr__")]
    assert len(features) == 14 and [f"attr_se__{f}" for f in features] == [
        c for c in out.columns if c.startswith("attr_se__")
    ]
    assert (out.filter(like="attr_se__").to_numpy() >= 0).all() and out["attr_se__age"].max() > 0
    assert out["converged"].all() and (out["n_steps"] >= 8 * 9).all()
    change = out["prediction"] - out["baseline_prediction"]
    np.testing.assert_allclose(out.filter(like="attr__").sum(axis=1) - change, out["delta"], atol=1e-6)
    baseline = manifest["baseline"]
    assert {k: baseline[k] for k in ("kind", "samples", "path", "seed", "pool_rows")} == {
        "kind": "distribution",
        "samples": 8,
        "path": "integral",
        "seed": 3,
        "pool_rows": 200,
    }
    assert 0 < baseline["prediction"] < 1 and manifest["runner"] == "ray"
    assert manifest["completeness"]["gradient_evaluations"] == out["n_steps"].sum()
    assert manifest["summary"]["top_features"] and "checks" in manifest["quality"]
