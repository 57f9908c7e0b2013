"""The README's "Explain your own model" runs as written: its three files in a fresh project,
the training script, then a real ``airflow dags test`` of the user's DAG."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from ig_airflow.identity import find_runs
from ig_airflow.testing.airflow_local import airflow_env, dag_test, migrate

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_files() -> dict[str, str]:
    section = README.read_text().split("## Explain your own model", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(?:python|yaml)\n# file: (\S+)\n(.*?)```", section, re.S)
    return {name: body for name, body in blocks}


def test_own_model_from_training_task_to_airflow_run(tmp_path: Path, airflow_db: Path) -> None:
    files = readme_files()
    assert set(files) == {"train_and_publish.py", "dags/configs/shapes.yaml", "dags/explain_shapes.py"}
    project = tmp_path / "project"
    for name, body in files.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(body)
    (project / "data").mkdir()
    trained = subprocess.run(
        [sys.executable, "train_and_publish.py"], cwd=project, capture_output=True, text=True, timeout=300
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert (project / "artifacts" / "shapes" / "v1" / "examples.parquet").exists()

    env = airflow_env(tmp_path / "airflow", project / "dags")
    env.pop("IG_AIRFLOW_TRUSTED_MODULES")  # the user's torch_export artifact needs no trusted module
    migrate(env, airflow_db)
    ok, log = dag_test("explain_shapes", "2024-05-01", env)
    assert ok, log[-4000:]
    runs = find_runs(str(project / "runs" / "ds=2024-05-01"))
    assert len(runs) == 1 and runs[0]["run_id"].startswith("manual__")  # airflow dags test's run id
    run = Path(runs[0]["uri"])
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["rows"]["explained"] == 500 and manifest["artifact"]["loader"] == "torch_export"
    assert manifest["baseline_source"] == "reference data (median, most frequent)"
    assert (run / "summary" / "feature_summary.parquet").exists() and (
        run / "report" / "report.html"
    ).exists()
