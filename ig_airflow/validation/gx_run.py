"""Running a suite with Great Expectations: an ephemeral context (or a file context at
``validation.gx_project_root``), one checkpoint over the whole DataFrame, Data Docs built into a
temporary folder that the stage then publishes."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from ig_airflow.config import ValidationSection


def run_gx(
    frame: pd.DataFrame, expectations: list[Any], settings: ValidationSection
) -> tuple[Any, Path | None]:
    """Run ``expectations`` on ``frame``; returns the validation result and the Data Docs folder."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    with quiet_gx():
        return _run_checkpoint(frame, expectations, settings)


@contextlib.contextmanager
def quiet_gx() -> Iterator[None]:
    """GX logs at WARNING inside the block (its import and a run log hundreds of INFO lines, and
    some of its modules set their own level) unless ig_airflow logs at DEBUG."""
    if logging.getLogger("ig_airflow").isEnabledFor(logging.DEBUG):
        yield
        return
    root = logging.getLogger("great_expectations")
    saved = {root: root.level}
    root.setLevel(max(root.level, logging.WARNING))
    try:
        import great_expectations  # noqa: F401 - imported here so that its import is quiet too

        for name in list(logging.root.manager.loggerDict):
            if name.startswith("great_expectations."):
                module_log = logging.getLogger(name)
                saved[module_log] = module_log.level
                module_log.setLevel(max(module_log.level, logging.WARNING))
        yield
    finally:
        for module_log, level in saved.items():
            module_log.setLevel(level)


def _run_checkpoint(
    frame: pd.DataFrame, expectations: list[Any], settings: ValidationSection
) -> tuple[Any, Path | None]:
    import great_expectations as gx

    if settings.gx_project_root:
        context = gx.get_context(mode="file", project_root_dir=settings.gx_project_root)
    else:
        context = gx.get_context(mode="ephemeral")
    _quiet_progress_bars(context)
    docs_dir = Path(tempfile.mkdtemp(prefix="ig_gx_docs_")) if settings.data_docs else None
    actions = []
    if docs_dir is not None:
        site = f"ig_airflow_{docs_dir.name}"
        context.add_data_docs_site(
            site_name=site,
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
        actions.append(gx.checkpoint.UpdateDataDocsAction(name="ig_airflow_data_docs", site_names=[site]))
    name = f"ig_airflow_{next(tempfile._get_candidate_names())}"  # unique within a file context
    source = context.data_sources.add_pandas(name)
    batch = source.add_dataframe_asset("rows").add_batch_definition_whole_dataframe("all_rows")
    suite = context.suites.add(gx.ExpectationSuite(name=f"{name}_suite", expectations=expectations))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=name, data=batch, suite=suite)
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=name,
            validation_definitions=[definition],
            actions=actions,
            result_format={"result_format": "COMPLETE"},
        )
    )
    result = checkpoint.run(batch_parameters={"dataframe": frame})
    return next(iter(result.run_results.values())), docs_dir


def _quiet_progress_bars(context: Any) -> None:
    try:
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context.variables.progress_bars = ProgressBarsConfig(globally=False)
    except Exception:  # noqa: BLE001 - cosmetic only
        pass
