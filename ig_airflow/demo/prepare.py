"""Build the demo: Adult data as Parquet, a trained PyTorch model artifact, a run config.

``ig-airflow demo prepare --out demo_output`` writes::

    demo_output/data/adult_train.parquet    reference rows (baselines, training)
    demo_output/data/adult_test.parquet     held-out rows to explain
    demo_output/artifacts/adult_torch/      model artifact (state_dict or .pt2 + ig_artifact.json)
    demo_output/artifacts/adult_keras/      with tensorflow=True: the Keras twin (.keras)
    demo_output/configs/explain.yaml        run config for ``ig-airflow explain``
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ig_airflow.artifacts import save_artifact
from ig_airflow.demo.adult import CATEGORICAL, ID, LABEL, NUMERIC, load_adult

log = logging.getLogger(__name__)


def write_frame(frame: pd.DataFrame, path: Path) -> None:
    import pyarrow as pa

    from ig_airflow.io import write_parquet

    write_parquet(str(path), pa.Table.from_pandas(frame, preserve_index=False))


PARTITION_DAYS = 7
PARTITION_START = "2024-01-01"


def write_daily_partitions(frame: pd.DataFrame, root: Path, days: int = PARTITION_DAYS) -> list[str]:
    """Split rows into synthetic daily partitions ``root/ds=YYYY-MM-DD/rows.parquet``,
    deterministically by a hash of the row id (Adult has no dates)."""
    dates = pd.date_range(PARTITION_START, periods=days, freq="D").strftime("%Y-%m-%d")
    day = (pd.util.hash_array(frame[ID].to_numpy()) % days).astype(int)
    written = []
    for i, ds in enumerate(dates):
        path = root / f"ds={ds}" / "rows.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_frame(frame[day == i].reset_index(drop=True), path)
        written.append(str(path))
    return written


def train_demo_torch(
    train: pd.DataFrame, artifact_dir: Path, seed: int = 0, epochs: int = 6, loader: str = "state_dict"
) -> dict:
    """Train the demo :class:`TabularNet`, fit Platt scaling on a held-out slice and save the
    artifact (``loader``: ``state_dict`` or ``torch_export``); returns its metadata as a dict."""
    import torch

    from ig_airflow.core.encoding import encode_rows
    from ig_airflow.demo.torch_model import fit_platt, input_spec_from_frame, train_tabular_net

    spec = input_spec_from_frame(train, NUMERIC, CATEGORICAL)
    rng = np.random.default_rng(seed)
    holdout = rng.random(len(train)) < 0.2
    model, kwargs = train_tabular_net(train[~holdout], spec, LABEL, epochs=epochs, seed=seed)
    numeric, categorical = encode_rows(train[holdout], spec)
    with torch.no_grad():
        logits = model(torch.as_tensor(numeric, dtype=torch.float32), torch.as_tensor(categorical)).numpy()
    a, b = fit_platt(logits, train.loc[holdout, LABEL].to_numpy())
    accuracy = float(((logits > 0) == train.loc[holdout, LABEL].to_numpy()).mean())
    log.info("demo model: holdout accuracy %.3f, Platt a=%.3f b=%.3f", accuracy, a, b)
    metadata = save_artifact(
        model,
        str(artifact_dir),
        inputs=spec,
        model_kwargs=kwargs if loader == "state_dict" else None,
        loader=loader,
        output={"index": 0, "explain": "probability"},
        calibration={"method": "platt", "a": a, "b": b},
        baseline={"numeric": "median", "categorical": "most_frequent"},
        extra={"holdout_accuracy": accuracy, "training_rows": int((~holdout).sum()), "seed": seed},
        overwrite=True,
    )
    return metadata.model_dump(mode="json")


def train_demo_keras(train: pd.DataFrame, artifact_dir: Path, seed: int = 0, epochs: int = 4) -> dict:
    """Train the Keras twin of the demo model and save it as a ``.keras`` artifact (custom
    layer registered by ``ig_airflow.demo.keras_model``), Platt-calibrated like the PyTorch one."""
    from ig_airflow.core.encoding import encode_rows
    from ig_airflow.demo.keras_model import keras_input_spec, train_tabular_keras
    from ig_airflow.demo.torch_model import fit_platt, input_spec_from_frame

    spec = keras_input_spec(input_spec_from_frame(train, NUMERIC, CATEGORICAL))
    holdout = np.random.default_rng(seed).random(len(train)) < 0.2
    model = train_tabular_keras(train[~holdout], spec, LABEL, epochs=epochs, seed=seed)
    numeric, categorical = encode_rows(train[holdout], spec)
    logits = model.predict([numeric.astype("float32"), categorical.astype("int32")], verbose=0).reshape(-1)
    a, b = fit_platt(logits, train.loc[holdout, LABEL].to_numpy())
    accuracy = float(((logits > 0) == train.loc[holdout, LABEL].to_numpy()).mean())
    metadata = save_artifact(
        model,
        str(artifact_dir),
        inputs=spec,
        custom_objects_module="ig_airflow.demo.keras_model",
        output={"index": 0, "explain": "probability"},
        calibration={"method": "platt", "a": a, "b": b},
        baseline={"numeric": "median", "categorical": "most_frequent"},
        extra={"holdout_accuracy": accuracy, "seed": seed},
        overwrite=True,
    )
    return metadata.model_dump(mode="json")


def prepare_demo(
    out_dir: str | Path, seed: int = 0, tensorflow: bool = False, torch_loader: str = "state_dict"
) -> dict[str, str]:
    """Write the demo data, model artifact and run config under ``out_dir``."""
    out = Path(out_dir)
    (out / "data").mkdir(parents=True, exist_ok=True)
    (out / "configs").mkdir(parents=True, exist_ok=True)
    train, test = load_adult("train"), load_adult("test")
    paths = {
        "train": out / "data" / "adult_train.parquet",
        "test": out / "data" / "adult_test.parquet",
        "artifact": out / "artifacts" / "adult_torch",
        "config": out / "configs" / "explain.yaml",
    }
    write_frame(train, paths["train"])
    write_frame(test, paths["test"])
    write_daily_partitions(test, out / "partitions")
    train_demo_torch(train, paths["artifact"], seed=seed, loader=torch_loader)
    if tensorflow:
        paths["artifact_tf"] = out / "artifacts" / "adult_keras"
        train_demo_keras(train, paths["artifact_tf"], seed=seed)
    config = {
        "model": {"uri": str(paths["artifact"])},
        "data": {
            "input_uri": str(paths["test"]),
            "id_columns": [ID],
            "reference_uri": str(paths["train"]),
        },
        "ig": {"tolerance": 0.01, "max_steps": 512},
        "output": {"uri": str(out / "runs" / "{{ ds }}")},
    }
    paths["config"].write_text(yaml.safe_dump(config, sort_keys=False))
    return {k: str(v) for k, v in paths.items()}
