"""What the *deployment* trusts, as opposed to what an artifact, a run config or a data file
asks for. Settings here come from the environment of the processes that run ig_airflow (the
Airflow workers, the Ray workers, a shell), never from an artifact or a config.

``IG_AIRFLOW_TRUSTED_MODULES`` (or Airflow's ``[ig_airflow] trusted_modules`` set through
``AIRFLOW__IG_AIRFLOW__TRUSTED_MODULES``): comma-separated module names whose classes an
artifact may name (``model_class``) or import (``custom_objects_module``), with their
submodules, e.g. ``mycompany.models,ig_airflow.demo``. Empty by default: an artifact that
names code to import is refused with the name of the setting. See ``SECURITY.md``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from ig_airflow.exceptions import ArtifactError

TRUSTED_MODULES_ENV = "IG_AIRFLOW_TRUSTED_MODULES"
AIRFLOW_TRUSTED_MODULES_ENV = "AIRFLOW__IG_AIRFLOW__TRUSTED_MODULES"


_process_trusted: list[str] = []  # modules whose code this process already runs (see trusting)


@contextlib.contextmanager
def trusting(*modules: str) -> Iterator[None]:
    """Trust ``modules`` inside the block, in this process only: ``save_artifact`` reloads the
    artifact it wrote to check it, and the model's own class is already imported by the caller."""
    added = [m for m in modules if m]
    _process_trusted.extend(added)
    try:
        yield
    finally:
        for module in added:
            _process_trusted.remove(module)


def trusted_modules() -> list[str]:
    """The module names the deployment trusts (both settings together)."""
    names = list(_process_trusted)
    for variable in (TRUSTED_MODULES_ENV, AIRFLOW_TRUSTED_MODULES_ENV):
        names += [n.strip() for n in os.environ.get(variable, "").split(",") if n.strip()]
    return names


def is_trusted(module: str) -> bool:
    """Whether ``module`` is a trusted module or inside one."""
    return any(module == name or module.startswith(f"{name}.") for name in trusted_modules())


def require_trusted(reference: str, what: str, uri: str) -> str:
    """The module part of ``reference`` (``package.module:Name`` or a module name), if the
    deployment trusts it; else :class:`ArtifactError` naming the key and the setting."""
    module = reference.partition(":")[0] if ":" in reference else reference
    if not module or not is_trusted(module):
        raise ArtifactError(
            f"{uri}: {what} {reference!r} names code outside the modules this deployment trusts "
            f"({trusted_modules() or 'none'}); an artifact cannot run code unless the platform "
            f"allows its module: set {TRUSTED_MODULES_ENV}={module or reference} (comma-separated; "
            f"or Airflow's [ig_airflow] trusted_modules) where ig_airflow runs"
        )
    return module
