"""How the Airflow views choose run folders from the XCom records of a DAG's runs (no database
here: the records as the query returns them), and keep them under ``[ig_airflow] ui_roots``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ig_airflow.ui.runs import _group, normalised, under_roots

T0 = datetime(2024, 1, 8, tzinfo=UTC)


def record(dag_run: str, task: str, minute: int, value: object) -> tuple[str, str, datetime, object]:
    return dag_run, task, T0 + timedelta(minutes=minute), value


def test_records_group_into_dag_runs_newest_first_and_folders_in_stage_order() -> None:
    newest_first = [
        record("run_b", "drift", 13, {"run_uri": "/d/b", "history_uri": "/d/history.parquet"}),
        record("run_b", "compute_ig", 12, {"run_uri": "/d/b", "history_uri": None}),
        record("run_a", "candidate.compute_ig", 3, {"run_uri": "/d/a/candidate"}),
        record("run_a", "production.compute_ig", 2, {"run_uri": "/d/a/production"}),
        record("run_a", "odd", 1, "not a record"),
        record("run_a", "odd2", 1, {"run_uri": 7}),
    ]
    groups = _group(newest_first, roots=[])
    assert [g.dag_run_id for g in groups] == ["run_b", "run_a"]
    b, a = groups
    assert [(f.run_uri, f.stages, f.history_uri) for f in b.folders] == [
        ("/d/b", ["compute_ig", "drift"], "/d/history.parquet")
    ]
    assert [f.run_uri for f in a.folders] == ["/d/a/production", "/d/a/candidate"]


def test_roots_keep_folders_inside_after_resolving_dots() -> None:
    roots = [normalised("/data/ig/runs"), normalised("s3://bucket/runs")]
    assert under_roots("/data/ig/runs/ds=1/run=2", roots)
    assert under_roots("s3://bucket/runs/x", roots)
    assert not under_roots("/data/ig/runs/../secrets", roots)
    assert not under_roots("/data/ig/runs-other/x", roots)  # a prefix of the name is not inside
    assert not under_roots("s3://bucket/runs/../../other", roots)
    assert not under_roots("s3://other/runs/x", roots)
    assert under_roots("/anywhere", [])
    records = [record("r", "compute_ig", 1, {"run_uri": "/data/ig/runs/../../etc"})]
    assert _group(records, roots) == []
