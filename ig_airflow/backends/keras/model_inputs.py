"""Read what a Keras model says about its inputs, at save time: the vocabulary of a
``StringLookup`` fed by a feature's ``Input`` (so the artifact indexes values exactly as the
model does), the layer each categorical feature is attributed at, and the shape of per-feature
inputs. A vocabulary given in the spec that differs from the model's is refused, naming the
feature."""

from __future__ import annotations

from typing import Any

import keras

from ig_airflow.exceptions import ArtifactError
from ig_airflow.spec import CategoricalFeature, InputSpec


def complete_spec(model: Any, spec: InputSpec) -> InputSpec:
    """``spec`` with the model's lookup vocabularies, attribution layers and input shape filled in."""
    inputs = {t.name: t for t in getattr(model, "inputs", None) or []}
    if spec.calling not in ("dict", "per_feature") or not inputs:
        return spec
    categorical = [_complete(model, inputs.get(f.name), f) for f in spec.categorical]
    ranks = {len(t.shape) for name, t in inputs.items() if name in spec.feature_names}
    shape = "vector" if ranks == {1} else spec.feature_shape
    return spec.model_copy(update={"categorical": categorical, "feature_shape": shape})


def _consumers(model: Any, tensor: Any) -> list[Any]:
    """The layers whose (single) input is ``tensor``."""
    found = []
    for layer in model.layers:
        try:
            if layer.input is tensor:
                found.append(layer)
        except (AttributeError, ValueError):  # layers called more than once have no single input
            continue
    return found


def _complete(model: Any, tensor: Any, feature: CategoricalFeature) -> CategoricalFeature:
    if tensor is None:
        return feature
    consumers = _consumers(model, tensor)
    lookup = next((layer for layer in consumers if isinstance(layer, keras.layers.StringLookup)), None)
    update: dict[str, Any] = {}
    if lookup is not None:
        update = _lookup_encoding(lookup, feature)
        consumers = [lookup] if lookup.output_mode != "int" else _consumers(model, lookup.output)
    if not feature.embedding_layer:
        embedding = next(
            (
                layer
                for layer in consumers
                if isinstance(layer, keras.layers.Embedding | keras.layers.StringLookup)
            ),
            None,
        )
        if embedding is not None:
            update["embedding_layer"] = embedding.name
    return CategoricalFeature.model_validate({**feature.model_dump(), **update}) if update else feature


def _lookup_encoding(lookup: Any, feature: CategoricalFeature) -> dict[str, Any]:
    """The feature's encoding as the StringLookup has it; refuses a spec that differs."""
    if lookup.num_oov_indices != 1 or getattr(lookup, "invert", False):
        raise ArtifactError(
            f"feature {feature.name!r}: StringLookup {lookup.name!r} has num_oov_indices="
            f"{lookup.num_oov_indices}; ig_airflow explains lookups with exactly one OOV index"
        )
    vocabulary = [str(v) for v in lookup.get_vocabulary()]
    mask = 1 if lookup.mask_token is not None else 0
    oov_index = mask
    values = vocabulary[mask + 1 :]
    indices = list(range(mask + 1, len(vocabulary)))
    model_map = dict(zip(values, indices, strict=True))
    if feature.vocabulary:
        saved_map = {v: i for v, i in feature.index_map().items() if v in feature.vocabulary}
        if saved_map != model_map or feature.oov_index != oov_index:
            differs = next((v for v in feature.vocabulary if saved_map.get(v) != model_map.get(v)), None)
            raise ArtifactError(
                f"feature {feature.name!r}: the spec's vocabulary does not index values as the model's "
                f"StringLookup {lookup.name!r} does (e.g. {differs!r}: spec {saved_map.get(differs)}, "
                f"model {model_map.get(differs)}); leave the vocabulary empty to read it from the model"
            )
    return {"vocabulary": values, "indices": indices, "oov_index": oov_index, "input_encoding": "string"}
