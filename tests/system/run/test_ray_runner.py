"""IG on a real embedded Ray: equality with the in-process engine, worker death, resume."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import yaml

from ig_airflow.config import parse_run_config
from ig_airflow.demo.torch_model import TabularNet
from ig_airflow.run.local import run_explain
from ig_airflow.run.ray_runner import ShardFailed, run_explain_ray
from ig_airflow.testing.faults import InjectedFault, fault_env


@pytest.fixture(scope="module", autouse=True)
def embedded_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def rows_uri(demo, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("ray_in") / "rows.parquet"
    pd.read_parquet(demo["test"]).head(1200).to_parquet(path, index=False)
    return str(path)


def make_config(demo, rows_uri: str, out: Path, model_uri: str | None = None, ig: dict | None = None, **ray):
    raw = yaml.safe_load(Path(demo["config"]).read_text())
    raw["data"]["input_uri"] = rows_uri
    raw["output"]["uri"] = str(out)
    raw["ig"].update({"batch_rows": 100, **(ig or {})})
    raw["ray"] = {"num_workers": 2, "shard_rows": 300, **ray}
    if model_uri:
        raw["model"]["uri"] = model_uri
    return parse_run_config(raw)


def inject(monkeypatch, fault: str) -> None:
    """Turn on the fault-injection run hook with ``fault`` for this test."""
    for key, value in fault_env(fault).items():
        monkeypatch.setenv(key, value)


def writing_to(config, out: Path):
    """The same run config with another output directory."""
    return config.model_copy(update={"output": config.output.model_copy(update={"uri": str(out)})})


def resave(artifact, model, uri: Path, **kwargs) -> str:
    """Save ``model`` as a new artifact with ``artifact``'s output, calibration and baseline."""
    from ig_airflow.artifacts import save_artifact

    meta = artifact.metadata
    save_artifact(
        model, str(uri), output=meta.output, calibration=meta.calibration, baseline=meta.baseline, **kwargs
    )
    return str(uri)


def load(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "attributions").sort_values("row_id").reset_index(drop=True)


def assert_same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert a["row_id"].tolist() == b["row_id"].tolist()
    assert a["n_steps"].tolist() == b["n_steps"].tolist()
    floats = [c for c in a.columns if c.startswith("attr__")] + ["prediction", "delta"]
    np.testing.assert_allclose(a[floats].to_numpy(), b[floats].to_numpy(), atol=1e-6, rtol=0)


@pytest.fixture(scope="module")
def in_process(demo, rows_uri, tmp_path_factory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("inproc")
    run_explain(make_config(demo, rows_uri, out))
    return load(out)


def test_ray_output_equals_in_process_engine(demo, rows_uri, in_process, tmp_path: Path) -> None:
    manifest = run_explain_ray(make_config(demo, rows_uri, tmp_path))
    assert manifest["shards"] == {"total": 4, "skipped": 0, "computed": 4}
    assert manifest["rows"]["explained"] == 1200 and manifest["id_columns"] == ["row_id"]
    features = [c.removeprefix("attr__") for c in in_process.columns if c.startswith("attr__")]
    assert set(manifest["baseline"]) == {*features, "prediction"}  # what `ig-airflow why` shows
    parts = [f"part-0000{i}.parquet" for i in range(4)]  # one file per shard, committed together
    assert sorted(p.name for p in (tmp_path / "attributions").iterdir()) == ["_SUCCESS", *parts]
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == [
        p.replace(".parquet", ".json") for p in parts
    ]
    assert not list(tmp_path.glob(".attributions.*"))
    assert_same(load(tmp_path), in_process)
    in_duckdb = duckdb.sql(f"select row_id from read_parquet('{tmp_path}/attributions/*.parquet')")
    assert [r[0] for r in in_duckdb.fetchall()] == pd.read_parquet(rows_uri)["row_id"].tolist()  # in order


def test_killed_worker_is_retried_and_output_unchanged(
    demo, rows_uri, in_process, tmp_path, monkeypatch
) -> None:
    marker = tmp_path / "killed"
    inject(monkeypatch, f"kill_worker:shard=2:once={marker}")
    manifest = run_explain_ray(make_config(demo, rows_uri, tmp_path / "out"))
    assert marker.exists()  # the worker really died once
    assert manifest["shards"]["computed"] == 4
    assert_same(load(tmp_path / "out"), in_process)


def test_interrupted_run_resumes_only_missing_shards(
    demo, rows_uri, in_process, tmp_path, monkeypatch
) -> None:
    config = make_config(demo, rows_uri, tmp_path / "out", num_workers=1)
    inject(monkeypatch, f"fail_run:after_shards=2:once={tmp_path / 'failed'}")
    with pytest.raises(InjectedFault):
        run_explain_ray(config)
    shards = tmp_path / "out" / "shards"
    finished = sorted(p.name for p in shards.glob("*.parquet"))
    assert 2 <= len(finished) < 4 and not (tmp_path / "out" / "attributions").exists()
    stamps = {name: (shards / name).stat().st_mtime_ns for name in finished}
    manifest = run_explain_ray(config)
    assert manifest["shards"] == {"total": 4, "skipped": len(finished), "computed": 4 - len(finished)}
    committed = tmp_path / "out" / "attributions"  # the finished shards, moved in, not rewritten
    assert {name: (committed / name).stat().st_mtime_ns for name in finished} == stamps
    assert_same(load(tmp_path / "out"), in_process)
    # a changed config invalidates every finished shard
    changed = make_config(demo, rows_uri, tmp_path / "out", ig={"n_steps": 16}, num_workers=1)
    assert run_explain_ray(changed)["shards"]["skipped"] == 0


def test_shard_that_keeps_failing_fails_the_run_with_its_id(demo, rows_uri, tmp_path, monkeypatch) -> None:
    inject(monkeypatch, "kill_worker:shard=1")
    config = make_config(demo, rows_uri, tmp_path, max_restarts=1, max_task_retries=1, max_shard_attempts=1)
    with pytest.raises(ShardFailed, match=r"shard 1 \(rows 300-600\) failed 1 time\(s\), its worker died"):
        run_explain_ray(config)
    assert not (tmp_path / "attributions").exists()
    assert not list(tmp_path.rglob(".*.tmp-*"))


def test_bad_row_in_a_shard_names_the_shard_and_column(demo, tmp_path) -> None:
    frame = pd.read_parquet(demo["test"]).head(600)
    frame.loc[450, "race"] = "Unknown-race"
    frame.to_parquet(tmp_path / "bad.parquet", index=False)
    with pytest.raises(ShardFailed, match=r"shard 1 \(rows 300-600\) failed: .*column 'race': 1 row"):
        run_explain_ray(make_config(demo, str(tmp_path / "bad.parquet"), tmp_path / "out"))


def test_gpu_request_without_gpus_is_a_clear_error(demo, rows_uri, tmp_path) -> None:
    from ig_airflow.exceptions import ConfigError

    with pytest.raises(ConfigError, match=r"ray.gpus_per_worker=1.0 but the Ray cluster has 0 GPU"):
        run_explain_ray(make_config(demo, rows_uri, tmp_path, gpus_per_worker=1))


def test_tensorflow_artifact_on_ray_equals_in_process(demo, rows_uri, tmp_path) -> None:
    pytest.importorskip("keras")
    from ig_airflow.artifacts import load_artifact
    from ig_airflow.demo.keras_model import keras_from_torch, keras_input_spec

    torch_artifact = load_artifact(demo["artifact"])
    keras_uri = resave(
        torch_artifact,
        keras_from_torch(torch_artifact.model),
        tmp_path / "keras",
        inputs=keras_input_spec(torch_artifact.metadata.inputs),
        custom_objects_module="ig_airflow.demo.keras_model",
    )
    config = make_config(demo, rows_uri, tmp_path / "ray", model_uri=keras_uri)
    manifest = run_explain_ray(config)
    assert manifest["artifact"]["framework"] == "tensorflow" and manifest["shards"]["computed"] == 4
    run_explain(writing_to(config, tmp_path / "local"))
    assert_same(load(tmp_path / "ray"), load(tmp_path / "local"))


def test_torch_export_artifact_on_ray_equals_state_dict_in_process(
    demo, rows_uri, in_process, tmp_path
) -> None:
    from ig_airflow.artifacts import load_artifact

    state_dict_artifact = load_artifact(demo["artifact"])
    exported_uri = resave(
        state_dict_artifact,
        state_dict_artifact.model,
        tmp_path / "exported",
        inputs=state_dict_artifact.metadata.inputs,
        loader="torch_export",
    )
    manifest = run_explain_ray(make_config(demo, rows_uri, tmp_path / "ray", model_uri=exported_uri))
    assert manifest["artifact"]["loader"] == "torch_export" and manifest["shards"]["computed"] == 4
    assert_same(load(tmp_path / "ray"), in_process)


def test_layer_attributions_on_ray_equal_in_process(demo, rows_uri, tmp_path) -> None:
    config = make_config(demo, rows_uri, tmp_path / "ray", ig={"layer_attributions": ["mlp.1"]})
    run_explain_ray(config)
    run_explain(writing_to(config, tmp_path / "local"))
    on_ray, local = load(tmp_path / "ray"), load(tmp_path / "local")
    layer_columns = [c for c in on_ray.columns if c.startswith("layer")]
    assert len(layer_columns) == 64 + 2 and list(on_ray.columns) == list(local.columns)
    np.testing.assert_allclose(
        on_ray[layer_columns].to_numpy(), local[layer_columns].to_numpy(), atol=1e-6, rtol=0
    )
    # the aggregate stage summarises every unit of the layer
    from ig_airflow.analysis.aggregation import summarise_run

    summary = summarise_run(str(tmp_path / "ray" / "attributions"), str(tmp_path / "summary"))
    assert summary["layers"] == {"mlp.1": 64} and "layer_summary" in summary["outputs"]
    units = pd.read_parquet(summary["outputs"]["layer_summary"]).set_index("unit")
    expected = on_ray[[f"layer__mlp.1__{i}" for i in range(64)]].abs().mean().to_numpy()
    np.testing.assert_allclose(units.sort_index()["mean_abs_attribution"].to_numpy(), expected, rtol=1e-12)
    assert units["share"].sum() == pytest.approx(1.0)
    assert units.loc[units["rank"] == 1, "mean_abs_attribution"].item() == pytest.approx(expected.max())


def test_empty_input_gives_an_empty_output_on_both_paths(demo, tmp_path) -> None:
    pd.read_parquet(demo["test"]).head(0).to_parquet(tmp_path / "empty.parquet", index=False)
    config = make_config(demo, str(tmp_path / "empty.parquet"), tmp_path / "ray")
    assert run_explain_ray(config)["rows"]["explained"] == 0
    run_explain(writing_to(config, tmp_path / "local"))
    ray_out = pd.read_parquet(tmp_path / "ray" / "attributions")
    local_out = pd.read_parquet(tmp_path / "local" / "attributions")
    assert len(ray_out) == len(local_out) == 0
    assert list(ray_out.columns) == list(local_out.columns) and "attr__age" in ray_out.columns


class RefusesOldAges(TabularNet):
    """Raises on inputs it was not built for: a deterministic error no retry can fix."""

    def forward(self, x_num, x_cat):  # type: ignore[override]
        if (x_num[:, 0] > 150).any():
            raise ValueError("age above 150 is outside what this model accepts")
        return super().forward(x_num, x_cat)


def test_model_error_on_the_rows_fails_in_the_driver_before_any_ray_task(demo, tmp_path, monkeypatch) -> None:
    import time

    from ig_airflow.artifacts import load_artifact
    from ig_airflow.exceptions import ModelCallError

    monkeypatch.setenv("IG_AIRFLOW_TRUSTED_MODULES", f"ig_airflow.demo,{__name__}")
    artifact = load_artifact(demo["artifact"])
    model = RefusesOldAges(**artifact.metadata.model_kwargs)
    model.load_state_dict(artifact.model.state_dict())
    uri = resave(
        artifact,
        model,
        tmp_path / "art",
        inputs=artifact.metadata.inputs,
        model_kwargs=artifact.metadata.model_kwargs,
    )
    frame = pd.read_parquet(demo["test"]).head(600)
    frame.loc[3, "age"] = 200.0
    frame.to_parquet(tmp_path / "rows.parquet", index=False)
    started = time.perf_counter()
    with pytest.raises(ModelCallError, match=r"the model fails on rows 0-8 .*ValueError: age above 150"):
        run_explain_ray(make_config(demo, str(tmp_path / "rows.parquet"), tmp_path / "out", model_uri=uri))
    assert time.perf_counter() - started < 30
    assert not (tmp_path / "out" / "shards").exists()  # no Ray task ran
