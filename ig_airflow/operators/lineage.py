"""OpenLineage lineage of the stage operators, reported through Airflow's OpenLineage provider
(``pip install 'ig-airflow[openlineage]'``).

The provider calls :meth:`IGStageOperator.get_openlineage_facets_on_complete` (also when the task
fails) after the stage ran; it answers from the run config the stage resolved (kept on the
operator by ``run_config``) and the files the stage wrote. Each task reports:

- ``load_model``: input the model artifact;
- ``validate``: input ``data.input_uri`` (a Hive-partitioned input with a ``subset`` facet naming
  the partition, e.g. ``ds=2024-01-03``); outputs the validated and the quarantined rows;
- ``compute_ig``: inputs the validated rows (or the input partition) and the model artifact;
  output ``<run>/attributions`` (with its ``schema``);
- ``aggregate``: inputs the attributions and the rows; output ``<run>/summary``;
- ``quality``: inputs the attributions, the rows and the model; output ``<run>/quality/quality.json``;
- ``drift``: inputs the attributions and the reference run's; outputs ``<run>/drift/drift.json``
  and the history table.

The model artifact carries its version (``version`` facet), and every event the run facet
``ig_airflow_model`` (:func:`model_facet_class`): the model's URI, version, checksum and framework,
the run's partition, run id and folder, and (the IG task) the values of its asset events: rows
explained and quarantined, the share of rows whose completeness converged, the mean completeness
error. Datasets are named as OpenLineage's naming spec says (:func:`dataset_name`).

Nothing here is imported until the provider asks: without it, the operators import no
OpenLineage module and behave as before.
"""

from __future__ import annotations

import functools
import os
from typing import Any
from urllib.parse import urlsplit

FACET_NAME = "ig_airflow_model"
SCHEME_ALIASES = {"gcs": "gs", "s3a": "s3", "s3n": "s3", "abfs": "abfss"}


def operator_lineage(operator: Any, task_instance: Any = None) -> Any:
    """The provider's ``OperatorLineage`` for ``operator``'s finished (or failed) stage; None
    without the provider, or when the stage failed before it resolved its config."""
    config = getattr(operator, "resolved_config", None)
    if config is None:
        return None
    try:
        from airflow.providers.openlineage.extractors import OperatorLineage
    except ImportError:
        return None
    build = next((STAGES[c.__name__] for c in type(operator).__mro__ if c.__name__ in STAGES), None)
    inputs, outputs = build(config) if build else ([], [])
    facet = model_facet(config, getattr(operator, "outlet_extra", None) or {})
    return OperatorLineage(inputs=inputs, outputs=outputs, run_facets={FACET_NAME: facet})


def dataset_name(uri: str) -> tuple[str, str]:
    """OpenLineage's namespace and name of a path or URI, as ``openlineage.client.naming``
    names them: ``file`` and the absolute path for a local path; ``s3://<bucket>`` (``gs://``,
    ``hdfs://<host:port>``, ...) and the path inside it for an object store."""
    parts = urlsplit(str(uri))
    if len(parts.scheme) <= 1:  # a local path (one letter: a Windows drive)
        return "file", os.path.abspath(uri)
    scheme = SCHEME_ALIASES.get(parts.scheme, parts.scheme)
    if scheme == "file":
        return (f"file://{parts.netloc}" if parts.netloc else "file"), parts.path
    return f"{scheme}://{parts.netloc}", parts.path.lstrip("/")


def dataset(uri: str, output: bool = False, facets: dict | None = None, io_facets: dict | None = None) -> Any:
    """An input (or output) dataset of ``uri``, with its dataset facets and input (output) facets."""
    from airflow.providers.common.compat.openlineage.facet import InputDataset, OutputDataset

    namespace, name = dataset_name(uri)
    if output:
        return OutputDataset(namespace, name, facets=facets or {}, outputFacets=io_facets or {})
    return InputDataset(namespace, name, facets=facets or {}, inputFacets=io_facets or {})


def rows_dataset(config: Any, rows: int | None = None) -> Any:
    """``data.input_uri``; its ``subset`` facet names the partition ``data.partition`` selects."""
    from openlineage.client.facet_v2 import base_subset_dataset as subset
    from openlineage.client.facet_v2 import input_statistics_input_dataset as statistics

    from ig_airflow.identity import partition_name

    io_facets: dict[str, Any] = {}
    if config.data.partition:
        partition = subset.Partition(
            dimensions=dict(config.data.partition), identifier=partition_name(config.data.partition)
        )
        condition = subset.PartitionSubsetCondition(partitions=[partition])
        io_facets["subset"] = subset.InputSubsetInputDatasetFacet(inputCondition=condition)
    if rows is not None:
        io_facets["inputStatistics"] = statistics.InputStatisticsInputDatasetFacet(rowCount=rows)
    return dataset(config.data.input_uri, io_facets=io_facets)


def explained_rows(config: Any) -> Any:
    """The rows the IG stage explains: the validated rows, or the input partition."""
    from ig_airflow.layout import RunLayout

    if config.validation.enabled:
        return dataset(RunLayout.of(config).validation.validated)
    return rows_dataset(config)


def model_dataset(config: Any) -> Any:
    """The model artifact, its ``version`` facet the model version (the artifact's checksum)."""
    from openlineage.client.facet_v2 import dataset_version_dataset

    from ig_airflow.identity import run_identity

    version = run_identity(config).model_version
    facet = dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=version)
    return dataset(config.model.uri, facets={"version": facet})


def attributions_dataset(config: Any, output: bool = False) -> Any:
    """``<run>/attributions``, with its columns (the ``schema`` facet) once written."""
    from airflow.providers.common.compat.openlineage.facet import (
        SchemaDatasetFacet,
        SchemaDatasetFacetFields,
    )

    from ig_airflow.io import exists, open_parquet
    from ig_airflow.layout import RunLayout

    layout = RunLayout.of(config)
    facets = {}
    if exists(layout.attribution_part(0)):
        schema = open_parquet(layout.attribution_part(0)).schema_arrow
        fields = [SchemaDatasetFacetFields(name=f.name, type=str(f.type)) for f in schema]
        facets["schema"] = SchemaDatasetFacet(fields=fields)
    return dataset(layout.attributions, output=output, facets=facets)


def written(uri: str, rows: int | None = None) -> Any:
    """An output dataset, with its row count when known."""
    from airflow.providers.common.compat.openlineage.facet import OutputStatisticsOutputDatasetFacet

    if rows is None:
        return dataset(uri, output=True)
    return dataset(
        uri, output=True, io_facets={"outputStatistics": OutputStatisticsOutputDatasetFacet(rowCount=rows)}
    )


def load_model_lineage(config: Any) -> tuple[list, list]:
    return [model_dataset(config)], []


def validate_lineage(config: Any) -> tuple[list, list]:
    from ig_airflow.io import exists, read_json
    from ig_airflow.layout import RunLayout

    layout = RunLayout.of(config).validation
    rows = (read_json(layout.report) or {}).get("rows", {}) if exists(layout.report) else {}
    outputs = [
        written(layout.validated, rows.get("validated")),
        written(layout.quarantine, rows.get("quarantined")),
    ]
    return [rows_dataset(config, rows.get("input"))], outputs


def compute_ig_lineage(config: Any) -> tuple[list, list]:
    return [explained_rows(config), model_dataset(config)], [attributions_dataset(config, output=True)]


def aggregate_lineage(config: Any) -> tuple[list, list]:
    from ig_airflow.layout import RunLayout

    summary = RunLayout.of(config).summary.root
    return [attributions_dataset(config), explained_rows(config)], [written(summary)]


def drift_lineage(config: Any) -> tuple[list, list]:
    """Inputs the attributions and the reference (as ``drift.json`` records the one compared
    with); outputs ``drift.json`` and the history table."""
    from ig_airflow.io import exists, read_json
    from ig_airflow.layout import RunLayout

    report = RunLayout.of(config).drift.json
    reference = (read_json(report) or {}).get("reference") if exists(report) else None
    inputs = [attributions_dataset(config)] + ([dataset(reference)] if reference else [])
    outputs = [written(report)] + ([written(config.drift.history_uri)] if config.drift.history_uri else [])
    return inputs, outputs


def quality_lineage(config: Any) -> tuple[list, list]:
    """Inputs the attributions, the explained rows and the model; output ``quality.json``."""
    from ig_airflow.layout import RunLayout

    inputs = [attributions_dataset(config), explained_rows(config), model_dataset(config)]
    return inputs, [written(RunLayout.of(config).quality.json)]


STAGES = {
    "LoadModelArtifactOperator": load_model_lineage,
    "ValidateInputsOperator": validate_lineage,
    "ComputeAttributionsOperator": compute_ig_lineage,
    "AggregateAttributionsOperator": aggregate_lineage,
    "AssessQualityOperator": quality_lineage,
    "SummariseDriftOperator": drift_lineage,
}
"""Each stage operator's lineage, by class name (a subclass inherits its base's): the lineage
never imports the operator modules, which import it."""


@functools.cache
def model_facet_class() -> type:
    """The ``ig_airflow_model`` run facet (an OpenLineage ``RunFacet``; built on first use, so
    that importing this module imports no OpenLineage)."""
    import attrs
    from openlineage.client.facet_v2 import RunFacet

    @attrs.define
    class IGAirflowModelRunFacet(RunFacet):
        """The model a run of ig_airflow explained, the run, and what its IG stage found."""

        modelUri: str  # noqa: N815 - OpenLineage facets name their fields in camelCase
        modelVersion: str  # noqa: N815
        artifactChecksum: str  # noqa: N815
        framework: str
        partition: str
        runId: str  # noqa: N815
        runUri: str  # noqa: N815
        rowsExplained: int | None = None  # noqa: N815
        rowsQuarantined: int | None = None  # noqa: N815
        convergedShare: float | None = None  # noqa: N815
        meanCompletenessError: float | None = None  # noqa: N815

        _additional_skip_redact = ["modelUri", "modelVersion", "artifactChecksum", "runUri"]

    IGAirflowModelRunFacet.__module__ = __name__
    IGAirflowModelRunFacet.__qualname__ = "IGAirflowModelRunFacet"
    return IGAirflowModelRunFacet


def __getattr__(name: str) -> Any:
    """``IGAirflowModelRunFacet``, the facet's class, importable from here (built on first use)."""
    if name == "IGAirflowModelRunFacet":
        return model_facet_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def model_facet(config: Any, extra: dict[str, Any]) -> Any:
    """The ``ig_airflow_model`` facet of a run: the model and the run from the artifact's metadata
    and the run's identity; ``extra``: the IG stage's asset event values (its ``event_extra``)."""
    from ig_airflow.artifacts import read_metadata
    from ig_airflow.identity import run_identity

    metadata = read_metadata(config.model.uri)
    identity = run_identity(config, metadata)
    return model_facet_class()(
        modelUri=config.model.uri,
        modelVersion=identity.model_version,
        artifactChecksum=metadata.checksum(),
        framework=metadata.framework,
        partition=identity.partition,
        runId=identity.run_id,
        runUri=config.output.uri,
        rowsExplained=extra.get("rows_explained"),
        rowsQuarantined=extra.get("rows_quarantined"),
        convergedShare=extra.get("converged_share"),
        meanCompletenessError=extra.get("mean_completeness_error"),
    )
