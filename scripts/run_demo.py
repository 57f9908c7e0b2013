"""The README's demo: build the Adult demo (data + trained model), validate and explain the held-out rows.

Usage: python scripts/run_demo.py [--out demo_output]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging

from ig_airflow.config import load_run_config
from ig_airflow.demo.prepare import prepare_demo
from ig_airflow.pipeline import run_pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="demo_output")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    paths = prepare_demo(args.out)
    config = load_run_config(paths["config"], {"ds": dt.date.today().isoformat()})
    manifest = run_pipeline(config)
    print(
        json.dumps(
            {"demo": paths, "explain": manifest["outputs"], "validation": manifest["validation"]["rows"]},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
