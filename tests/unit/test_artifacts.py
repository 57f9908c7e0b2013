"""Artifact save/load, checksums and safe loading."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from ig_airflow.artifacts import load_artifact, read_metadata, save_artifact
from ig_airflow.backends.torch.wrapper import TorchModelWrapper
from ig_airflow.core.encoding import encode_rows
from ig_airflow.demo.torch_model import TabularNet
from ig_airflow.exceptions import ArtifactError, InputDataError
from ig_airflow.spec import METADATA_FILE

SPEC = {
    "numeric": [{"name": "a"}, {"name": "b"}],
    "categorical": [{"name": "c", "vocabulary": ["x", "y"], "embedding_layer": "embeddings.c"}],
}


def small_model() -> tuple[TabularNet, dict]:
    torch.manual_seed(0)
    kwargs = {"n_numeric": 2, "categorical": ["c"], "cardinalities": [3], "embedding_dim": 4, "hidden": [8]}
    return TabularNet(**kwargs), kwargs


def test_state_dict_round_trip_verifies_and_reproduces_outputs(tmp_path: Path) -> None:
    model, kwargs = small_model()
    meta = save_artifact(model, str(tmp_path / "art"), inputs=SPEC, model_kwargs=kwargs)
    assert meta.loader == "state_dict" and meta.model_class == "ig_airflow.demo.torch_model:TabularNet"
    assert set(meta.files) == {"model.pt"}
    loaded = load_artifact(str(tmp_path / "art"))
    x_num, x_cat = torch.randn(5, 2), torch.tensor([[0], [1], [2], [1], [0]])
    assert torch.equal(loaded.model(x_num, x_cat), model.eval()(x_num, x_cat))
    assert loaded.checksum == read_metadata(str(tmp_path / "art")).checksum()


def test_save_refuses_to_overwrite_without_flag_and_leaves_no_temp_dirs(tmp_path: Path) -> None:
    model, kwargs = small_model()
    save_artifact(model, str(tmp_path / "art"), inputs=SPEC, model_kwargs=kwargs)
    with pytest.raises(ArtifactError, match="already exists"):
        save_artifact(model, str(tmp_path / "art"), inputs=SPEC, model_kwargs=kwargs)
    save_artifact(model, str(tmp_path / "art"), inputs=SPEC, model_kwargs=kwargs, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_checksum_mismatch_names_the_file(tmp_path: Path) -> None:
    model, kwargs = small_model()
    save_artifact(model, str(tmp_path / "art"), inputs=SPEC, model_kwargs=kwargs)
    with open(tmp_path / "art" / "model.pt", "ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(ArtifactError, match="checksum mismatch for 'model.pt'"):
        load_artifact(str(tmp_path / "art"))


def test_missing_listed_file_and_missing_metadata(tmp_path: Path) -> None:
    model, kwargs = small_model()
    save_artifact(model, str(tmp_path / "art"), inputs=SPEC, model_kwargs=kwargs)
    (tmp_path / "art" / "model.pt").unlink()
    with pytest.raises(ArtifactError, match="'model.pt' listed in ig_artifact.json is missing"):
        load_artifact(str(tmp_path / "art"))
    with pytest.raises(ArtifactError, match="not a model artifact"):
        load_artifact(str(tmp_path))


def test_pickle_needs_explicit_opt_in(tmp_path: Path) -> None:
    model, _ = small_model()
    save_artifact(model, str(tmp_path / "art"), inputs=SPEC, loader="pickle")
    with pytest.raises(ArtifactError, match="set model.allow_pickle: true"):
        load_artifact(str(tmp_path / "art"))
    loaded = load_artifact(str(tmp_path / "art"), allow_pickle=True)
    assert isinstance(loaded.model, TabularNet)


def test_torchscript_artifact_loads_without_pickle_and_explains_numeric_inputs(tmp_path: Path) -> None:
    from ig_airflow.backends.torch.attribution import torch_attributor
    from ig_airflow.config import IGSection
    from ig_airflow.core.baselines import Baseline

    torch.manual_seed(0)
    model = TabularNet(n_numeric=3, categorical=[], cardinalities=[], hidden=[8]).eval()
    example = (torch.randn(4, 3), torch.zeros(4, 0, dtype=torch.long))
    spec = {"numeric": [{"name": n} for n in "abc"]}
    save_artifact(torch.jit.trace(model, example), str(tmp_path / "ts"), inputs=spec, loader="torchscript")
    save_artifact(
        model,
        str(tmp_path / "sd"),
        inputs=spec,
        model_kwargs={"n_numeric": 3, "categorical": [], "cardinalities": [], "hidden": [8]},
    )
    baseline = Baseline(
        numeric=torch.zeros(3).numpy().astype("float64"), categorical=torch.zeros(0).long().numpy()
    )
    rows = torch.randn(6, 3).double().numpy()
    results = []
    for name in ("ts", "sd"):
        loaded = load_artifact(str(tmp_path / name))
        backend = torch_attributor(TorchModelWrapper(loaded.model, loaded.metadata), baseline, IGSection())
        results.append(backend.attribute(rows, rows[:, :0].astype("int64"), 16).attributions)
    assert torch.allclose(torch.as_tensor(results[0]), torch.as_tensor(results[1]), atol=1e-6)


def test_torchscript_with_embeddings_is_refused_with_a_reason(tmp_path: Path) -> None:
    model, _ = small_model()
    traced = torch.jit.trace(model.eval(), (torch.randn(2, 2), torch.tensor([[0], [1]])))
    with pytest.raises(  # refused when saved, not when explained
        ArtifactError, match=r"embedding layers cannot be attributed \(\['c'\]\).*'torch_export'"
    ):
        save_artifact(traced, str(tmp_path / "art"), inputs=SPEC, loader="torchscript")
    assert not (tmp_path / "art").exists()


def _attributions(uri: str, rows, codes, dtype=torch.float64, allow_pickle: bool = False):
    import numpy as np

    from ig_airflow.backends.torch.attribution import torch_attributor
    from ig_airflow.config import IGSection
    from ig_airflow.core.baselines import Baseline

    loaded = load_artifact(uri, allow_pickle=allow_pickle)
    baseline = Baseline(numeric=np.zeros(2), categorical=np.zeros(1, dtype="int64"))
    backend = torch_attributor(
        TorchModelWrapper(loaded.model, loaded.metadata, dtype=dtype), baseline, IGSection()
    )
    return backend.attribute(rows, codes, 16).attributions


def test_torch_export_artifact_needs_no_class_and_attributes_embeddings(tmp_path: Path) -> None:
    import numpy as np

    model, kwargs = small_model()
    save_artifact(model, str(tmp_path / "sd"), inputs=SPEC, model_kwargs=kwargs)
    meta = save_artifact(model, str(tmp_path / "ex"), inputs=SPEC, loader="torch_export")
    assert meta.loader == "torch_export" and meta.model_class is None and set(meta.files) == {"model.pt2"}
    loaded = load_artifact(str(tmp_path / "ex"))
    assert not isinstance(loaded.model, TabularNet)  # rebuilt from the archive's graph, not the class
    assert "embeddings.c" in dict(loaded.model.named_modules())
    # any batch size runs (the batch dimension was exported as dynamic)
    x_num, x_cat = torch.randn(7, 2), torch.tensor([[0], [1], [2], [1], [0], [2], [2]])
    assert torch.allclose(loaded.model(x_num, x_cat), model.eval()(x_num, x_cat), atol=1e-6)
    rng = np.random.default_rng(0)
    rows, codes = rng.normal(size=(9, 2)), rng.integers(1, 3, size=(9, 1))
    exported, eager = (
        _attributions(str(tmp_path / "ex"), rows, codes),
        _attributions(str(tmp_path / "sd"), rows, codes),
    )
    assert np.abs(exported[:, 2]).sum() > 0  # the embedding feature got attribution
    np.testing.assert_allclose(exported, eager, atol=1e-12, rtol=0)


def test_exported_program_is_saved_as_it_is(tmp_path: Path) -> None:
    model, _ = small_model()
    batch = torch.export.Dim("batch")
    program = torch.export.export(
        model.eval(),
        (torch.randn(3, 2), torch.tensor([[0], [1], [2]])),
        dynamic_shapes=({0: batch}, {0: batch}),
    )
    assert save_artifact(program, str(tmp_path / "ex"), inputs=SPEC).loader == "torch_export"
    with pytest.raises(ArtifactError, match="saved with loader 'torch_export', not 'pickle'"):
        save_artifact(program, str(tmp_path / "bad"), inputs=SPEC, loader="pickle")


def test_torch_export_archive_with_pickled_weights_needs_opt_in(tmp_path: Path) -> None:
    import hashlib
    import io
    import zipfile

    import numpy as np

    model, _ = small_model()
    save_artifact(model, str(tmp_path / "ex"), inputs=SPEC, loader="torch_export")
    archive = tmp_path / "ex" / "model.pt2"
    # rewrite one weight as a pickled payload, as torch.export does for tensor subclasses
    with zipfile.ZipFile(archive) as src:
        members = {info.filename: src.read(info) for info in src.infolist()}
    config_name = next(n for n in members if n.endswith("weights_config.json"))
    config = json.loads(members[config_name])
    fqn = "embeddings.c.weight"
    payload = config["config"][fqn]
    payload["use_pickle"] = True
    buffer = io.BytesIO()
    torch.save(torch.nn.Parameter(dict(model.named_parameters())[fqn].detach().clone()), buffer)
    weight_name = next(n for n in members if n.endswith("/weights/" + payload["path_name"]))
    members[weight_name], members[config_name] = buffer.getvalue(), json.dumps(config).encode()
    with zipfile.ZipFile(archive, "w") as dst:
        for name, data in members.items():
            dst.writestr(name, data)
    meta_path = tmp_path / "ex" / METADATA_FILE
    meta = json.loads(meta_path.read_text())
    meta["files"]["model.pt2"] = hashlib.sha256(archive.read_bytes()).hexdigest()
    meta_path.write_text(json.dumps(meta))

    with pytest.raises(ArtifactError, match=r"model.pt2 holds pickled members.*embeddings.c.weight"):
        load_artifact(str(tmp_path / "ex"))
    rows, codes = np.ones((2, 2)), np.array([[1], [2]])
    save_artifact(model, str(tmp_path / "clean"), inputs=SPEC, loader="torch_export")
    np.testing.assert_allclose(
        _attributions(str(tmp_path / "ex"), rows, codes, allow_pickle=True),
        _attributions(str(tmp_path / "clean"), rows, codes),
        atol=1e-12,
    )


def test_model_that_cannot_be_exported_is_a_clear_error(tmp_path: Path) -> None:
    class DataDependent(torch.nn.Module):
        def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
            if x_num.sum() > 0:  # control flow on values cannot be traced
                return x_num.sum(1)
            return -x_num.sum(1)

    with pytest.raises(ArtifactError, match=r"cannot torch.export DataDependent .*save it as a state_dict"):
        save_artifact(
            DataDependent(), str(tmp_path / "ex"), inputs={"numeric": [{"name": "a"}]}, loader="torch_export"
        )
    assert not (tmp_path / "ex").exists()


def test_metadata_errors_name_the_key(tmp_path: Path) -> None:
    model, kwargs = small_model()
    save_artifact(model, str(tmp_path / "art"), inputs=SPEC, model_kwargs=kwargs)
    meta_path = tmp_path / "art" / METADATA_FILE
    meta = json.loads(meta_path.read_text())
    meta["inputs"]["categorical"][0]["oov_index"] = "middle"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="inputs.categorical.0.oov_index"):
        load_artifact(str(tmp_path / "art"))


def test_unknown_layer_name_lists_the_embeddings(tmp_path: Path) -> None:
    model, kwargs = small_model()
    spec = json.loads(json.dumps(SPEC))
    spec["categorical"][0]["embedding_layer"] = "embeddings.nope"
    with pytest.raises(ArtifactError, match=r"unknown layer name 'embeddings.nope'.*'embeddings.c'"):
        save_artifact(model, str(tmp_path / "art"), inputs=spec, model_kwargs=kwargs)  # refused when saved
    assert not (tmp_path / "art").exists()


def test_wrapper_names_missing_column_and_unseen_values(tmp_path: Path) -> None:
    import pandas as pd

    model, kwargs = small_model()
    save_artifact(model, str(tmp_path / "art"), inputs=SPEC, model_kwargs=kwargs)
    loaded = load_artifact(str(tmp_path / "art"))
    wrapper = TorchModelWrapper(loaded.model, loaded.metadata)
    with pytest.raises(InputDataError, match=r"missing feature columns \['b'\]"):
        encode_rows(pd.DataFrame({"a": [1.0], "c": ["x"]}), wrapper.spec)
    with pytest.raises(InputDataError, match=r"column 'c': 2 row\(s\) have values outside the vocabulary"):
        encode_rows(pd.DataFrame({"a": [1.0, 2, 3], "b": [0.0, 0, 0], "c": ["x", "zz", "zz"]}), wrapper.spec)
    with pytest.raises(InputDataError, match=r"column 'a': 1 row\(s\) are null"):
        encode_rows(pd.DataFrame({"a": [1.0, None], "b": [0.0, 0], "c": ["x", "y"]}), wrapper.spec)


def test_copy_of_artifact_elsewhere_still_verifies(tmp_path: Path) -> None:
    model, kwargs = small_model()
    save_artifact(model, str(tmp_path / "art"), inputs=SPEC, model_kwargs=kwargs)
    shutil.copytree(tmp_path / "art", tmp_path / "copy")
    assert (
        load_artifact(f"file://{tmp_path / 'copy'}").metadata.files
        == read_metadata(str(tmp_path / "art")).files
    )
