"""Attacks by whoever can write a model artifact or a run config: code named by the artifact,
archives that readers disagree on, graphs that write files, paths out of the artifact or the
output folder. Each is refused with the key at fault, and nothing ran (no marker file)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from ig_airflow.artifacts import load_artifact, read_metadata, save_artifact
from ig_airflow.demo.torch_model import TabularNet
from ig_airflow.exceptions import ArtifactError
from ig_airflow.spec import METADATA_FILE
from ig_airflow.trust import TRUSTED_MODULES_ENV

SPEC = {
    "numeric": [{"name": "a"}, {"name": "b"}],
    "categorical": [{"name": "c", "vocabulary": ["x", "y"], "embedding_layer": "embeddings.c"}],
}


def small_artifact(path: Path, **kwargs) -> Path:
    torch.manual_seed(0)
    model_kwargs = {
        "n_numeric": 2,
        "categorical": ["c"],
        "cardinalities": [3],
        "embedding_dim": 2,
        "hidden": [4],
    }
    model = TabularNet(**model_kwargs)
    if kwargs.get("loader", "state_dict") == "state_dict":
        kwargs["model_kwargs"] = model_kwargs
    save_artifact(model, str(path), inputs=SPEC, **kwargs)
    return path


def edit_metadata(artifact: Path, **changes) -> None:
    """Rewrite ig_artifact.json as an attacker with write access to the artifact would."""
    meta_path = artifact / METADATA_FILE
    meta = json.loads(meta_path.read_text())
    meta.update(changes)
    meta_path.write_text(json.dumps(meta))


def rehash(artifact: Path, name: str) -> None:
    meta = json.loads((artifact / METADATA_FILE).read_text())
    meta["files"][name] = hashlib.sha256((artifact / name).read_bytes()).hexdigest()
    (artifact / METADATA_FILE).write_text(json.dumps(meta))


def handmade_artifact(artifact: Path, loader: str, model_file: str) -> None:
    """ig_artifact.json for a TensorFlow model file written by other means than save_artifact,
    with the checksum an attacker would compute."""
    path = artifact / model_file
    if path.is_dir():  # a directory's checksum: the sorted JSON of its files' checksums
        members = [p for p in sorted(path.rglob("*")) if p.is_file()]
        files = {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in members}
        digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode())
    else:
        digest = hashlib.sha256(path.read_bytes())
    metadata = {
        "framework": "tensorflow",
        "loader": loader,
        "model_file": model_file,
        "inputs": {"numeric": SPEC["numeric"]},
        "files": {model_file: digest.hexdigest()},
    }
    (artifact / METADATA_FILE).write_text(json.dumps(metadata))


def test_model_class_outside_trusted_modules_is_never_imported(tmp_path: Path, monkeypatch) -> None:
    artifact = small_artifact(tmp_path / "art")
    marker = tmp_path / "pwned"
    edit_metadata(artifact, model_class="subprocess:run", model_kwargs={"args": ["touch", str(marker)]})
    with pytest.raises(
        ArtifactError, match=rf"model_class 'subprocess:run'.*set {TRUSTED_MODULES_ENV}=subprocess"
    ):
        load_artifact(str(artifact))
    assert not marker.exists()
    # the same through the CLI: exit 2, the key and the setting named, nothing run
    config = tmp_path / "run.yaml"
    (tmp_path / "rows.parquet").write_bytes(b"")
    config.write_text(
        yaml.safe_dump(
            {
                "model": {"uri": str(artifact)},
                "data": {"input_uri": str(tmp_path / "rows.parquet")},
                "ray": {"enabled": False},
                "output": {"uri": str(tmp_path / "out")},
            }
        )
    )
    env = {**os.environ, TRUSTED_MODULES_ENV: "ig_airflow.demo"}
    result = subprocess.run(
        [sys.executable, "-m", "ig_airflow.cli", "explain", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 2 and "model_class 'subprocess:run'" in result.stderr
    assert not marker.exists()


def test_trusted_module_that_is_not_a_model_class_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(TRUSTED_MODULES_ENV, "ig_airflow.demo,os")
    artifact = small_artifact(tmp_path / "art")
    edit_metadata(artifact, model_class="os:system", model_kwargs={})
    with pytest.raises(ArtifactError, match="'os:system' is not a torch.nn.Module class"):
        load_artifact(str(artifact))


def test_untrusted_custom_objects_module_is_never_imported(tmp_path: Path, monkeypatch) -> None:
    keras = pytest.importorskip("keras")
    from ig_airflow.demo.keras_model import build_tabular_keras

    package = tmp_path / "dags"
    package.mkdir()
    marker = tmp_path / "imported"
    (package / "evil_layers.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    monkeypatch.syspath_prepend(str(package))  # like Airflow's DAG folder on sys.path
    keras.utils.set_random_seed(0)
    artifact = tmp_path / "keras"
    save_artifact(
        build_tabular_keras(2, [], [], hidden=[4]), str(artifact), inputs={"numeric": SPEC["numeric"]}
    )
    edit_metadata(artifact, custom_objects_module="evil_layers")
    with pytest.raises(ArtifactError, match=rf"custom_objects_module 'evil_layers'.*{TRUSTED_MODULES_ENV}"):
        load_artifact(str(artifact))
    assert not marker.exists()


def test_archive_with_duplicate_entries_is_refused_before_loading(tmp_path: Path) -> None:
    artifact = small_artifact(tmp_path / "ex", loader="torch_export")
    archive = artifact / "model.pt2"
    with zipfile.ZipFile(archive) as src:
        first = src.namelist()[0]
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(archive, "a") as dst:
        dst.writestr(first, b"a second member of the same name, read by one reader and not the other")
    rehash(artifact, "model.pt2")
    with pytest.raises(ArtifactError, match=r"archive 'model.pt2' holds duplicate entries"):
        load_artifact(str(artifact), allow_pickle=True)  # refused even with the pickle opt-in


def test_archive_with_escaping_entry_is_refused(tmp_path: Path) -> None:
    artifact = small_artifact(tmp_path / "ex", loader="torch_export")
    with zipfile.ZipFile(artifact / "model.pt2", "a") as dst:
        dst.writestr("../../outside.txt", b"x")
    rehash(artifact, "model.pt2")
    with pytest.raises(ArtifactError, match=r"archive 'model.pt2' holds entries outside it"):
        load_artifact(str(artifact))


def test_savedmodel_graph_that_writes_files_needs_the_opt_in(tmp_path: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    marker = tmp_path / "written_by_graph"

    class Writer(tf.Module):
        @tf.function(
            input_signature=[[tf.TensorSpec([None, 2], tf.float32), tf.TensorSpec([None, 0], tf.int32)]]
        )
        def serve(self, inputs):
            tf.io.write_file(str(marker), "graph ran")
            return tf.reduce_sum(inputs[0], axis=1)

    artifact = tmp_path / "sm"
    artifact.mkdir()
    tf.saved_model.save(Writer(), str(artifact / "saved_model"))
    handmade_artifact(artifact, "savedmodel", "saved_model")
    with pytest.raises(ArtifactError, match="SavedModel is a graph whose ops run.*model.allow_pickle: true"):
        load_artifact(str(artifact))
    assert not marker.exists()
    from ig_airflow import explain_dataframe

    explain_dataframe(
        __import__("pandas").DataFrame({"a": [1.0], "b": [2.0]}), str(artifact), allow_pickle=True, n_steps=2
    )
    assert marker.exists()  # with the opt-in the graph runs: the opt-in is what guards it


@pytest.mark.parametrize("name", ["../model.pt", "/etc/passwd", "sub/../../model.pt", "."])
def test_paths_named_by_the_metadata_stay_inside_the_artifact(tmp_path: Path, name: str) -> None:
    artifact = small_artifact(tmp_path / "art")
    edit_metadata(artifact, model_file=name, files={name: "0" * 64})
    with pytest.raises(ArtifactError, match=r"model_file .* must be a relative path inside the artifact"):
        read_metadata(str(artifact))


def test_symlink_out_of_the_artifact_is_refused(tmp_path: Path) -> None:
    artifact = small_artifact(tmp_path / "art")
    secret = tmp_path / "secret.pt"
    secret.write_bytes((artifact / "model.pt").read_bytes())
    (artifact / "model.pt").unlink()
    (artifact / "model.pt").symlink_to(secret)
    with pytest.raises(ArtifactError, match=r"'model.pt' resolves outside the artifact"):
        load_artifact(str(artifact))


def test_placeholder_cannot_carry_dot_dot_into_output_paths(demo, tmp_path: Path) -> None:
    config = yaml.safe_load(Path(demo["config"]).read_text())
    config["output"]["uri"] = str(tmp_path / "runs" / "{{ ds }}")
    config["ray"] = {"enabled": False}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ig_airflow.cli",
            "explain",
            "--config",
            str(path),
            "--set",
            "ds=../../escaped",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert "output.uri: placeholder {{ ds }} = '../../escaped' would put '..' into a path" in result.stderr
    assert not (tmp_path.parent / "escaped").exists() and not (tmp_path / "runs").exists()


def test_remote_artifact_copies_are_removed(demo) -> None:
    import gc

    import fsspec

    fs = fsspec.filesystem("memory")
    for file in Path(demo["artifact"]).iterdir():
        fs.pipe(f"/artifacts/demo/{file.name}", file.read_bytes())
    loaded = load_artifact("memory://artifacts/demo")
    local = loaded.local_dir
    assert local.exists() and str(local) != demo["artifact"]
    del loaded
    gc.collect()
    assert not local.exists()


def test_keras_lambda_layer_is_refused_and_never_run(tmp_path: Path) -> None:
    keras = pytest.importorskip("keras")
    marker = tmp_path / "lambda_ran"
    inputs = [keras.Input((2,), name="x_num"), keras.Input((0,), dtype="int32", name="x_cat")]
    path = str(marker)  # a plain string: the lambda's closure is saved with it
    doubled = keras.layers.Lambda(lambda x: (open(path, "w").close(), x * 2.0)[1])(inputs[0])
    model = keras.Model(inputs, keras.layers.Dense(1)(doubled))
    marker.unlink()  # building the model called it once; nothing after this may
    lambda_refused = r"cannot load model.keras with safe_mode=True: .*`Lambda` layer"
    with pytest.raises(ArtifactError, match=lambda_refused):
        save_artifact(model, str(tmp_path / "lam"), inputs={"numeric": SPEC["numeric"]})  # refused when saved
    assert not (tmp_path / "lam").exists() and not marker.exists()
    # an artifact written by other means is refused when loaded, even with the pickle opt-in
    artifact = tmp_path / "handmade"
    artifact.mkdir()
    model.save(artifact / "model.keras")
    handmade_artifact(artifact, "keras", "model.keras")
    with pytest.raises(ArtifactError, match=lambda_refused):
        load_artifact(str(artifact), allow_pickle=True)
    assert not marker.exists()
