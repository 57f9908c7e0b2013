"""Hooks into the Ray runner, named by the deployment (never by an artifact or a config).

``IG_AIRFLOW_RUN_HOOKS=package.module:Name`` names an object (or a class, instantiated without
arguments) with any of::

    before_shard(shard_index)       # in the Ray worker, before a shard is explained
    after_shards(finished_shards)   # in the driver, after each shard finished

The test suite's fault injection (:mod:`ig_airflow.testing.faults`) is such a hook; production
deployments set none. The variable is passed on to the Ray workers (:func:`worker_env`).
"""

from __future__ import annotations

import functools
import importlib
import os
from typing import Any

HOOKS_ENV = "IG_AIRFLOW_RUN_HOOKS"


@functools.cache
def _load(ref: str) -> Any:
    module_name, _, name = ref.partition(":")
    hook = getattr(importlib.import_module(module_name), name)
    return hook() if isinstance(hook, type) else hook


def run_hooks() -> Any | None:
    """The hook object named by ``IG_AIRFLOW_RUN_HOOKS``, or None."""
    ref = os.environ.get(HOOKS_ENV)
    return _load(ref) if ref else None


def call_hook(method: str, *args: Any) -> None:
    """Call ``method`` of the configured hook, if there is one and it has the method."""
    hook = run_hooks()
    if hook is not None and hasattr(hook, method):
        getattr(hook, method)(*args)


def worker_env() -> dict[str, str]:
    """The deployment's ig_airflow settings (``IG_AIRFLOW_*``, Airflow's ``[ig_airflow]``
    section), passed on to Ray workers, which may run on a cluster started elsewhere."""
    return {k: v for k, v in os.environ.items() if k.startswith(("IG_AIRFLOW_", "AIRFLOW__IG_AIRFLOW__"))}
