"""Fault injection for resilience tests, a run hook (:mod:`ig_airflow.run.hooks`) driven by the
``IG_AIRFLOW_FAULT`` environment variable (never set in production). Turn it on with::

    IG_AIRFLOW_RUN_HOOKS=ig_airflow.testing.faults:FaultInjection

- ``kill_worker:shard=N:once=/path/marker`` - the Ray worker explaining shard N exits
  abruptly (``os._exit``), once (the marker file records that it happened);
- ``fail_run:after_shards=N:once=/path/marker`` - the driver raises after N shards finished,
  once, as if the task had been interrupted.
"""

from __future__ import annotations

import os

ENV = "IG_AIRFLOW_FAULT"
HOOK = "ig_airflow.testing.faults:FaultInjection"


class InjectedFault(RuntimeError):
    """Raised by an injected ``fail_run`` fault."""


def fault_env(spec: str) -> dict[str, str]:
    """The environment variables that inject the fault ``spec``."""
    from ig_airflow.run.hooks import HOOKS_ENV

    return {HOOKS_ENV: HOOK, ENV: spec}


def _parse() -> tuple[str, dict[str, str]] | None:
    spec = os.environ.get(ENV)
    if not spec:
        return None
    kind, *parts = spec.split(":")
    return kind, dict(p.split("=", 1) for p in parts if "=" in p)


def _first_time(options: dict[str, str]) -> bool:
    marker = options.get("once")
    if not marker:
        return True
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.close(fd)
    return True


class FaultInjection:
    """The run hook that carries out ``IG_AIRFLOW_FAULT``."""

    def before_shard(self, shard: int) -> None:
        fault = _parse()
        due = fault and fault[0] == "kill_worker" and int(fault[1].get("shard", -1)) == shard
        if due and _first_time(fault[1]):
            os._exit(1)

    def after_shards(self, finished_shards: int) -> None:
        fault = _parse()
        due = fault and fault[0] == "fail_run" and finished_shards >= int(fault[1].get("after_shards", 0))
        if due and _first_time(fault[1]):
            raise InjectedFault(f"{ENV}: injected failure after {finished_shards} shards")
