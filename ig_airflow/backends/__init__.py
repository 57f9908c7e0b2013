"""Framework backends, one package each (``torch``, ``keras``), registered as
``ig_airflow.backends`` entry points; see :mod:`ig_airflow.core.backend`."""

from __future__ import annotations

import importlib
from types import ModuleType

from ig_airflow.exceptions import IGAirflowError


def require_framework(module: str, extra: str) -> ModuleType:
    """Import a framework, or fail with one clear message naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        raise IGAirflowError(
            f"this artifact needs {module}, which is not installed: pip install 'ig-airflow[{extra}]'"
        ) from None
