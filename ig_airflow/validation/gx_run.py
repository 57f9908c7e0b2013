"""Running a suite with Great Expectations: an ephemeral context (or a file context at
``validation.gx_project_root``), one checkpoint over the whole DataFrame, Data Docs built into a
temporary folder that the stage then publishes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from ig_airflow.config import ValidationSection


def run_gx(
    frame: pd.DataFrame, expectations: list[Any], settings: ValidationSection
) -> tuple[Any, Path | None]:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
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
