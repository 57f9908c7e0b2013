"""Load and verify a model artifact."""

from __future__ import annotations

from typing import Any

from ig_airflow.operators.base import IGStageOperator


class LoadModelArtifactOperator(IGStageOperator):
    """Load the run's model artifact, verifying every checksum and that the model and its
    embedding layers load; pushes its URI, checksum and framework.

    Example::

        load = LoadModelArtifactOperator(task_id="load_model", config_path="configs/run.yaml")
    """

    def run_stage(self, context: Any) -> dict[str, Any]:
        from ig_airflow.artifacts import load_artifact

        config = self.run_config(context)
        artifact = load_artifact(config.model.uri, allow_pickle=config.model.allow_pickle)
        artifact.backend.check(artifact.model, artifact.metadata)  # resolves the embedding layers
        self.log.info("artifact %s verified (%s)", config.model.uri, artifact.checksum)
        return {
            "model_uri": config.model.uri,
            "artifact_checksum": artifact.checksum,
            "framework": artifact.metadata.framework,
            "features": len(artifact.metadata.inputs.feature_names),
        }
