"""The model registry's "current model" pointer and its decisions record (ig_airflow.promotion):
atomic files, one decision per DAG run, clear errors naming the file."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from ig_airflow.artifacts import read_metadata, save_artifact
from ig_airflow.demo.torch_model import TabularNet
from ig_airflow.promotion import (
    RegistryError,
    current_model,
    decisions,
    decisions_uri,
    initialise,
    pointer_uri,
    promote,
    reject,
)

SPEC = {"numeric": [{"name": "a"}, {"name": "b"}], "categorical": []}


def small_artifact(path: Path, seed: int, overwrite: bool = False) -> str:
    """A tiny model artifact at ``path``; each seed another model version."""
    torch.manual_seed(seed)
    kwargs = {"n_numeric": 2, "categorical": [], "cardinalities": [], "embedding_dim": 2, "hidden": [4]}
    save_artifact(TabularNet(**kwargs), str(path), inputs=SPEC, model_kwargs=kwargs, overwrite=overwrite)
    return str(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    """Two model versions: production (seed 0) and a candidate (seed 1)."""
    root = tmp_path_factory.mktemp("models")
    return {"production": small_artifact(root / "v0", 0), "candidate": small_artifact(root / "v1", 1)}


def checksum(uri: str) -> str:
    return read_metadata(uri).checksum()


def files(registry: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(registry.iterdir()) if p.is_file()}


def test_an_empty_registry_has_no_current_model_and_no_decisions(tmp_path: Path) -> None:
    assert current_model(str(tmp_path / "registry")) is None
    assert decisions(str(tmp_path / "registry")) == []


def test_approval_moves_the_pointer_and_records_who_and_why(tmp_path: Path, models) -> None:
    registry = str(tmp_path / "registry")
    first = initialise(registry, models["production"], "publish_versions", "first model", run_id="run-0")
    assert first["uri"] == models["production"] and first["checksum"] == checksum(models["production"])
    assert first["approval"] == "initial" and first["previous"] is None

    record = promote(
        registry, models["candidate"], "alice", "better recall", ["psi:age"], run_id="run-1", drift={"x": 1}
    )
    pointer = current_model(registry, verify=True)
    assert pointer["uri"] == models["candidate"] and pointer["checksum"] == checksum(models["candidate"])
    assert pointer["model_version"] == pointer["checksum"][:12]
    assert (pointer["promoted_by"], pointer["reason"], pointer["run_id"]) == (
        "alice",
        "better recall",
        "run-1",
    )
    assert pointer["approval"] == "human" and pointer["promoted_at"] == record["decided_at"]
    assert pointer["previous"]["checksum"] == checksum(models["production"])
    assert [d["decision"] for d in decisions(registry)] == ["initialised", "promoted"]
    assert decisions(registry)[-1] == record
    assert record["alerts"] == ["psi:age"] and record["drift"] == {"x": 1}
    assert record["production"]["uri"] == models["production"]  # what it replaced
    assert record["candidate"]["checksum"] == checksum(models["candidate"])
    # the files are what the functions say: JSON documents, nothing temporary left beside them
    assert json.loads(Path(pointer_uri(registry)).read_text()) == pointer
    assert len(json.loads(Path(decisions_uri(registry)).read_text())) == 2
    assert not [n for n in files(Path(registry)) if ".tmp-" in n]


def test_rejection_keeps_the_pointer_and_records_the_reason_and_alerts(tmp_path: Path, models) -> None:
    registry = str(tmp_path / "registry")
    initialise(registry, models["production"], "publish_versions", "first model", run_id="run-0")
    pointer = Path(pointer_uri(registry)).read_bytes()
    record = reject(
        registry, models["candidate"], "bob", "relies on race", ["js:race", "psi:race"], run_id="r2"
    )
    assert Path(pointer_uri(registry)).read_bytes() == pointer  # not even rewritten
    assert current_model(registry)["uri"] == models["production"]
    assert decisions(registry)[-1] == record
    assert (record["decision"], record["by"], record["reason"]) == ("rejected", "bob", "relies on race")
    assert record["alerts"] == ["js:race", "psi:race"]
    assert record["candidate"]["uri"] == models["candidate"]


def test_an_automatic_promotion_says_so(tmp_path: Path, models) -> None:
    registry = str(tmp_path / "registry")
    promote(registry, models["candidate"], "automatic", "no drift alert", run_id="r3", approval="automatic")
    pointer = current_model(registry)
    assert (pointer["approval"], pointer["promoted_by"]) == ("automatic", "automatic")
    assert decisions(registry)[0]["production"] is None  # nothing was in production


def test_the_same_run_decides_once(tmp_path: Path, models) -> None:
    registry = str(tmp_path / "registry")
    initialise(registry, models["production"], "publish_versions", "first model", run_id="run-1")
    first = promote(registry, models["candidate"], "alice", "ok", run_id="run-1")
    before = files(tmp_path / "registry")
    again = promote(registry, models["candidate"], "carol", "retried", run_id="run-1")  # a retried task
    assert again == first and files(tmp_path / "registry") == before  # one record, nothing rewritten
    initialise(registry, models["candidate"], "someone", "again", run_id="run-9")  # it has a model
    assert files(tmp_path / "registry") == before
    with pytest.raises(RegistryError, match=r"decisions\.json: run 'run-1' already promoted .*\(by 'alice'"):
        reject(registry, models["candidate"], "bob", "no", run_id="run-1")
    assert files(tmp_path / "registry") == before
    reject(registry, models["candidate"], "bob", "no", run_id="run-2")  # another run decides anew
    assert [d["run_id"] for d in decisions(registry)] == ["run-1", "run-1", "run-2"]
    assert current_model(registry)["checksum"] == checksum(models["candidate"])


def test_a_retry_completes_a_promotion_whose_pointer_was_not_written(tmp_path: Path, models) -> None:
    """The task died after recording the decision and before moving the pointer."""
    registry = str(tmp_path / "registry")
    initialise(registry, models["production"], "publish_versions", "first model", run_id="run-0")
    old_pointer = Path(pointer_uri(registry)).read_bytes()
    record = promote(registry, models["candidate"], "alice", "ok", run_id="run-1")
    Path(pointer_uri(registry)).write_bytes(old_pointer)
    assert promote(registry, models["candidate"], "alice", "ok", run_id="run-1") == record
    assert current_model(registry)["checksum"] == checksum(models["candidate"])
    assert len(decisions(registry)) == 2


def test_a_failed_decision_changes_nothing(tmp_path: Path, models) -> None:
    registry = str(tmp_path / "registry")
    initialise(registry, models["production"], "publish_versions", "first model", run_id="run-0")
    before = files(tmp_path / "registry")
    with pytest.raises(Exception, match="not a model artifact"):
        promote(registry, str(tmp_path / "nothing"), "alice", "ok", run_id="run-1")
    with pytest.raises(RegistryError, match="who made it"):
        promote(registry, models["candidate"], "", "ok", run_id="run-1")
    assert files(tmp_path / "registry") == before


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "invalid JSON"),
        ('["a", "list"]', "a JSON dict is expected"),
        ('{"uri": "/models/v1"}', "no checksum"),
        ("", "invalid JSON"),
    ],
)
def test_a_corrupt_pointer_is_an_error_naming_the_file(tmp_path: Path, models, content, problem) -> None:
    registry = tmp_path / "registry"
    registry.mkdir()
    (registry / "current.json").write_text(content)
    expected = rf"{registry / 'current.json'}: not a valid model pointer \({problem}"
    with pytest.raises(RegistryError, match=expected):
        current_model(str(registry))
    with pytest.raises(RegistryError, match=expected):  # no decision is taken over a broken pointer
        promote(str(registry), models["candidate"], "alice", "ok", run_id="run-1")
    assert decisions(str(registry)) == []


def test_a_corrupt_decisions_record_is_an_error_naming_the_file(tmp_path: Path, models) -> None:
    registry = tmp_path / "registry"
    registry.mkdir()
    (registry / "decisions.json").write_text('{"not": "a list"}')
    with pytest.raises(RegistryError, match=rf"{registry / 'decisions.json'}: not a valid decisions record"):
        promote(str(registry), models["candidate"], "alice", "ok", run_id="run-1")
    assert current_model(str(registry)) is None


def test_verify_notices_a_replaced_artifact(tmp_path: Path, models) -> None:
    registry = str(tmp_path / "registry")
    production = small_artifact(tmp_path / "prod", 0)
    initialise(registry, production, "publish_versions", "first model", run_id="run-0")
    assert current_model(registry, verify=True)["uri"] == production
    small_artifact(Path(production), 2, overwrite=True)  # someone replaced the production model
    assert current_model(registry)["uri"] == production  # unverified, the pointer reads as it is
    with pytest.raises(RegistryError, match="was replaced after its promotion"):
        current_model(registry, verify=True)


def test_concurrent_decisions_are_all_recorded(tmp_path: Path, models) -> None:
    registry = str(tmp_path / "registry")
    runs = [f"run-{i}" for i in range(8)]

    def decide(run_id: str) -> dict:
        decide_with = promote if int(run_id[-1]) % 2 else reject
        return decide_with(registry, models["candidate"], "alice", run_id, run_id=run_id)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(decide, runs))
    assert sorted(d["run_id"] for d in decisions(registry)) == runs
    assert current_model(registry)["checksum"] == checksum(models["candidate"])


def test_the_module_imports_no_airflow() -> None:
    code = "import sys, ig_airflow.promotion\nprint('airflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "False", result.stderr[-2000:]
