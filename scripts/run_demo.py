"""The README's demo: run the example DAGs end to end with a real Airflow (SQLite metadata DB,
``airflow dags test``, no server), embedded local Ray and real Great Expectations.

1. ``ig_adult_retrain`` writes the Adult data, trains the model and publishes its artifact;
2. ``ig_adult_explain`` loads it, validates the held-out rows, computes IG on Ray, aggregates
   and summarises drift.

Usage: python scripts/run_demo.py [--out demo_output] [--date YYYY-MM-DD] [--dags dags]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import pyarrow.parquet as pq

from ig_airflow.identity import find_runs
from ig_airflow.layout import RunLayout
from ig_airflow.testing.airflow_local import airflow_env, dag_test, run_airflow


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="demo_output")
    parser.add_argument("--date", default=dt.date.today().isoformat())
    parser.add_argument(
        "--dags", default="dags", help="the example DAGs (default: ./dags, as `make demo` runs)"
    )
    args = parser.parse_args()
    out = Path(args.out).resolve()
    env = airflow_env(out, args.dags)
    migrated = run_airflow(["db", "migrate"], env)
    if migrated.returncode:
        print(migrated.stdout[-3000:], migrated.stderr[-3000:], file=sys.stderr)
        return 1
    for dag_id in ("ig_adult_retrain", "ig_adult_explain"):
        print(f"running {dag_id} for {args.date} ...", flush=True)
        ok, log = dag_test(dag_id, args.date, env)
        (out / f"{dag_id}.log").write_text(log)
        if not ok:
            print(log[-5000:], file=sys.stderr)
            print(f"{dag_id} failed; full log: {out / f'{dag_id}.log'}", file=sys.stderr)
            return 1
    run = Path(find_runs(str(out / "runs" / "explain" / f"ds={args.date}"))[-1]["uri"])  # the latest
    layout = RunLayout(str(run))
    manifest = json.loads(Path(layout.manifest).read_text())
    validation = json.loads(Path(layout.validation.report).read_text())
    summary = json.loads(Path(layout.summary.json).read_text())
    drift = json.loads(Path(layout.drift.json).read_text())
    print(
        json.dumps(
            {
                "attributions": manifest["outputs"]["attributions"],
                "rows": validation["rows"],
                "mean_completeness_error": manifest["completeness"]["mean_error"],
                "top_features": summary["top_features"],
                "drift_alerts": drift["alerts"],
                "outputs": str(run),
                "logs": [str(out / "ig_adult_retrain.log"), str(out / "ig_adult_explain.log")],
            },
            indent=2,
        )
    )
    from ig_airflow import explain_prediction

    first_id = pq.read_table(manifest["outputs"]["attributions"], columns=["row_id"]).column(0)[0].as_py()
    print(f"\nwhy did the model decide this? `ig-airflow why {run} --id {first_id}`:")
    print(explain_prediction(str(run), first_id).to_text(top=5))
    return 0


if __name__ == "__main__":
    sys.exit(main())
