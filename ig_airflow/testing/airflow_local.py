"""Run the example DAGs locally with no server: a SQLite metadata DB under the output
directory and ``airflow dags test`` (used by ``make demo`` and the end-to-end tests)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def airflow_env(out_dir: str | Path, dags_folder: str | Path) -> dict[str, str]:
    """Environment for a self-contained Airflow: AIRFLOW_HOME under ``out_dir`` (SQLite),
    the DAGs in ``dags_folder``, no example DAGs, demo data under ``out_dir``."""
    out = Path(out_dir).resolve()
    return {
        **os.environ,
        "AIRFLOW_HOME": str(out / "airflow_home"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(Path(dags_folder).resolve()),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{out / 'airflow_home' / 'airflow.db'}",
        "IG_AIRFLOW_DEMO_DIR": str(out),
        "IG_AIRFLOW_TRUSTED_MODULES": "ig_airflow.demo",  # the demo's model classes (SECURITY.md)
        "RAY_USAGE_STATS_ENABLED": "0",
        "GX_ANALYTICS_ENABLED": "False",
        "PYTHONUNBUFFERED": "1",
    }


def airflow_cli() -> str:
    found = shutil.which("airflow", path=os.path.dirname(sys.executable)) or shutil.which("airflow")
    if not found:
        raise RuntimeError("the airflow command is not installed (pip install 'ig-airflow[airflow]')")
    return found


def run_airflow(args: list[str], env: dict[str, str], timeout: int = 900) -> subprocess.CompletedProcess:
    """Run ``airflow <args>``; output captured."""
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    return subprocess.run([airflow_cli(), *args], env=env, capture_output=True, text=True, timeout=timeout)


def dag_test(dag_id: str, logical_date: str, env: dict[str, str]) -> tuple[bool, str]:
    """``airflow dags test``; returns (run succeeded, combined log)."""
    result = run_airflow(["dags", "test", dag_id, logical_date], env)
    log = result.stdout + result.stderr
    finished = [line for line in log.splitlines() if "DagRun Finished" in line]
    return result.returncode == 0 and bool(finished) and "state=success" in finished[-1], log
