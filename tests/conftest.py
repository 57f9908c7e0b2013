"""Shared fixtures: the demo (Adult data + trained PyTorch artifact), built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# the demo models' classes are trusted through the documented deployment setting (SECURITY.md)
os.environ.setdefault("IG_AIRFLOW_TRUSTED_MODULES", "ig_airflow.demo")


@pytest.fixture(scope="module", autouse=True)
def no_ray_left_behind():
    """A module whose pipeline started an embedded Ray in this process shuts it down, so the
    next module starts from a process without one (as a fresh task would)."""
    yield
    import sys

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Demo data, a trained and Platt-calibrated PyTorch artifact and a run config."""
    from ig_airflow.demo.prepare import prepare_demo

    return prepare_demo(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="session")
def demo_frames(demo: dict[str, str]):
    import pandas as pd

    return pd.read_parquet(demo["train"]), pd.read_parquet(demo["test"])


@pytest.fixture(scope="session")
def airflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A metadata DB that ``airflow db migrate`` made once: each test module's Airflow starts
    from a copy of it (``migrate(env, airflow_db)``) instead of migrating its own."""
    from ig_airflow.testing.airflow_local import airflow_env, migrate

    env = airflow_env(tmp_path_factory.mktemp("airflow_db"), Path(__file__).parents[1] / "dags")
    migrate(env)
    return Path(env["AIRFLOW_HOME"]) / "airflow.db"


def write_config(path: Path, config: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


CHROMIUM_FLAGS = [  # headless, and nothing that reaches for the network
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def dump_dom(page: Path, profile: Path) -> str:
    """The DOM of ``page`` after headless Chromium loaded it and ran its scripts."""
    import shutil
    import subprocess

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "headless Chromium is needed (scripts/setup.sh installs Debian's chromium)"
    command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=5000"]
    return subprocess.run(
        [*command, "--dump-dom", f"file://{page}"], capture_output=True, text=True, timeout=120
    ).stdout


def keras_twin(torch_artifact, path: Path):
    """A Keras model with the PyTorch demo model's weights, saved and reloaded as an artifact."""
    from ig_airflow.artifacts import load_artifact, save_artifact
    from ig_airflow.demo.keras_model import keras_from_torch, keras_input_spec

    meta = torch_artifact.metadata
    save_artifact(
        keras_from_torch(torch_artifact.model),
        str(path),
        inputs=keras_input_spec(meta.inputs),
        output=meta.output,
        calibration=meta.calibration,
        baseline=meta.baseline,
        custom_objects_module="ig_airflow.demo.keras_model",
    )
    return load_artifact(str(path))
