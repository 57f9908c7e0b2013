"""Run the example DAGs locally: a SQLite metadata DB under the output directory and
``airflow dags test`` with no server (used by ``make demo`` and the end-to-end tests), or a
real scheduler, DAG processor and API server (:func:`airflow_services`)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
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


def migrate(env: dict[str, str], template_db: str | Path | None = None) -> None:
    """The metadata DB of ``env``: a copy of ``template_db`` (a SQLite DB that ``airflow db
    migrate`` made with the same Airflow, e.g. once per test session) when given, else
    ``airflow db migrate``."""
    target = Path(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///"))
    if template_db is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template_db, target)
        return
    migrated = run_airflow(["db", "migrate"], env)
    if migrated.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed: {migrated.stderr[-2000:]}")


def dag_test(dag_id: str, logical_date: str, env: dict[str, str]) -> tuple[bool, str]:
    """``airflow dags test``; returns (run succeeded, combined log)."""
    result = run_airflow(["dags", "test", dag_id, logical_date], env)
    log = result.stdout + result.stderr
    finished = [line for line in log.splitlines() if "DagRun Finished" in line]
    return result.returncode == 0 and bool(finished) and "state=success" in finished[-1], log


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def service_env(
    env: dict[str, str], port: int, parallelism: int = 8, users: dict[str, str] | None = None
) -> dict[str, str]:
    """``env`` for a running Airflow: the LocalExecutor, whose task processes reach the Execution
    API of the api-server on ``port`` (a JWT secret shared by all processes); with no ``users``
    every API caller an admin (a local, loopback-only server), else a login for each of ``users``
    (name: password, admins of the simple auth manager) and none for anyone else."""
    logins = {}
    if users:
        passwords = Path(env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json"
        passwords.parent.mkdir(parents=True, exist_ok=True)
        passwords.write_text(json.dumps(users))
        logins = {
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{name}:admin" for name in users),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        }
    return {
        **env,
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(parallelism),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": str(not users),
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
        **logins,
    }


def healthy(port: int) -> bool:
    """Whether the api-server on ``port`` reports the metadata DB, scheduler and DAG processor healthy."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=5) as reply:
            health = json.load(reply)
    except (OSError, ValueError):
        return False
    parts = ("metadatabase", "scheduler", "dag_processor")
    return all((health.get(part) or {}).get("status") == "healthy" for part in parts)


def stop(processes: list[subprocess.Popen], grace_s: float = 20.0) -> None:
    """Stop each started process's group (its task processes included): SIGTERM, then SIGKILL."""
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.contextmanager
def airflow_services(
    env: dict[str, str], start_timeout_s: float = 180.0, users: dict[str, str] | None = None
) -> Iterator[dict[str, str]]:
    """Run an Airflow for real: ``api-server`` (REST and Execution API, on a free port),
    ``scheduler`` (LocalExecutor) and ``dag-processor``, each in its own process group with its
    log under ``$AIRFLOW_HOME/services/``. Yields the environment to talk to it (the CLI, or the
    REST API at ``AIRFLOW__API__BASE_URL``); stops all three and their children on exit.
    ``users`` (name: password) turns the login on (:func:`service_env`)."""
    port = free_port()
    env = service_env(env, port, users=users)
    logs = Path(env["AIRFLOW_HOME"]) / "services"
    logs.mkdir(parents=True, exist_ok=True)
    commands = {
        "api-server": ["api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        "scheduler": ["scheduler", "--skip-serve-logs"],
        "dag-processor": ["dag-processor"],
    }
    processes: list[subprocess.Popen] = []
    try:
        for name, args in commands.items():
            with open(logs / f"{name}.log", "ab") as log:
                processes.append(
                    subprocess.Popen(
                        [airflow_cli(), *args],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        deadline = time.monotonic() + start_timeout_s
        while not healthy(port):
            exited = [p.args[1] for p in processes if p.poll() is not None]
            if exited or time.monotonic() > deadline:
                raise RuntimeError(f"Airflow did not start (exited: {exited}); logs in {logs}")
            time.sleep(0.5)
        yield env
    finally:
        stop(processes)
