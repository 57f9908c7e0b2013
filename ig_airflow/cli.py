"""Command line: ``ig-airflow explain|validate|run --config run.yaml``, ``ig-airflow why`` and the
demo helpers."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from typing import Any

from ig_airflow.exceptions import IGAirflowError


def _template_vars(pairs: list[str]) -> dict[str, str]:
    values = {"ds": dt.date.today().isoformat()}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {pair!r}")
        values[key.strip()] = value
    return values


def _run_config(args: argparse.Namespace) -> Any:
    """The run config of a command: rendered, its run id set, placed in the run's own folder."""
    from ig_airflow.config import load_run_config
    from ig_airflow.identity import resolve_run

    config = load_run_config(args.config, _template_vars(args.set))
    if args.run_id:
        config = config.model_copy(
            update={"output": config.output.model_copy(update={"run_id": args.run_id})}
        )
    return resolve_run(config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ig-airflow",
        description="Integrated Gradients explanations for PyTorch and TensorFlow models.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    commands = {
        "explain": "explain a Parquet file with a model artifact, as the run config says. Reads "
        "data.input_uri, computes IG (on Ray when ray.enabled, the default: embedded local Ray, or "
        "the cluster at ray.address / RAY_ADDRESS), and writes the attributions dataset "
        "(attributions/) and manifest.json under output.uri (committed when complete)",
        "validate": "validate the input with Great Expectations: validated + quarantined rows, "
        "GX result JSON and Data Docs under validation.output_uri",
        "quality": "measure a finished run's explanations on a sample of its rows (the quality "
        "section): deletion/insertion curves against a random and a permutation-importance order, "
        "infidelity, max-sensitivity and the model-randomisation check, into output.uri/quality; exit "
        "status 2 when a check fails with quality.on_fail: fail",
        "run": "the whole pipeline, as the explain DAG runs it: validate the input, explain the validated "
        "rows, aggregate, measure the explanations' quality, then drift against the configured reference "
        "(history table, alerts) and the HTML report under output.uri/report",
    }
    for name, text in commands.items():
        command = sub.add_parser(name, help=text.split(". ")[0], description=text)
        command.add_argument("--config", required=True, help="run config YAML (see ig_airflow.config)")
        command.add_argument(
            "--run-id",
            help="this run's id (output.run_id; default 'manual': the same command resumes the same "
            "run; with output.run_folder, a new id gets a new folder)",
        )
        command.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="fill a {{ KEY }} placeholder in the config (ds defaults to today's date)",
        )

    _add_inspect_parsers(sub)
    _add_demo_parser(sub)
    return parser


def _add_inspect_parsers(sub: Any) -> None:
    """``why`` (one row of a run) and ``runs`` (the runs under a folder)."""
    why = sub.add_parser(
        "why",
        help="why did the model decide this? one row's explanation from a finished run",
        description="Print one row of a finished run: its prediction against the baseline, the "
        "features ordered by the size of their attribution (value, baseline value, attribution, "
        "share), completeness; or, for a quarantined row, validation's reasons.",
    )
    why.add_argument("run", help="the run's output directory (holding manifest.json)")
    why.add_argument(
        "--id",
        action="append",
        required=True,
        metavar="VALUE|COLUMN=VALUE",
        help="the row's id; COLUMN=VALUE once per id column when the run has several",
    )
    why.add_argument(
        "--target", help="multi-target runs: the class or output to show (default: the row's first)"
    )
    why.add_argument("--top", type=int, default=10, help="features to show (default: 10; 0: all)")
    why.add_argument("--json", action="store_true", help="print JSON instead of a table")

    runs = sub.add_parser(
        "runs",
        help="list the runs under a folder: partition, model version, run id, folder",
        description="List every finished run under a folder (one per run folder), oldest first.",
    )
    runs.add_argument("root", help="a folder of run folders, e.g. output.uri with output.run_folder")
    runs.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _add_demo_parser(sub: Any) -> None:
    demo = sub.add_parser("demo", help="demo data and model (UCI Adult)")
    demo_sub = demo.add_subparsers(dest="demo_command", required=True)
    prepare = demo_sub.add_parser(
        "prepare", help="write Adult Parquet files, train and save the demo model, write a config"
    )
    prepare.add_argument("--out", default="demo_output", help="output directory (default: demo_output)")
    prepare.add_argument("--seed", type=int, default=0, help="training seed (default: 0)")
    prepare.add_argument("--tensorflow", action="store_true", help="also train and save the Keras demo model")
    prepare.add_argument(
        "--torch-loader",
        choices=["state_dict", "torch_export"],
        default="state_dict",
        help="how the PyTorch model is saved: state_dict (default) or a pickle-free torch.export archive",
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "explain":
            from ig_airflow.pipeline import run_ig

            manifest = run_ig(_run_config(args))
            print(
                json.dumps({k: manifest[k] for k in ("outputs", "rows", "completeness", "timing")}, indent=2)
            )
        elif args.command == "validate":
            from ig_airflow.validation import run_validation

            report = run_validation(_run_config(args))
            print(json.dumps({k: report[k] for k in ("rows", "mapped", "outputs")}, indent=2))
        elif args.command == "quality":
            from ig_airflow.pipeline import run_quality

            result = run_quality(_run_config(args))
            keys = ("passed", "checks", "rows", "infidelity", "max_sensitivity", "randomisation")
            print(json.dumps({k: result.get(k) for k in keys}, indent=2))
        elif args.command == "run":
            from ig_airflow.pipeline import run_pipeline

            manifest = run_pipeline(_run_config(args), run_key=_template_vars(args.set)["ds"])
            keys = ("outputs", "rows", "validation", "completeness", "summary", "quality", "drift", "timing")
            print(json.dumps({k: manifest.get(k) for k in keys}, indent=2))
        elif args.command == "why":
            from ig_airflow.analysis.row_explanation import explain_prediction, row_key

            explanation = explain_prediction(args.run, row_key(args.id), args.target)
            top = args.top or None
            if args.json:
                print(json.dumps(explanation.to_dict(top=top), indent=2, default=str))
            else:
                print(explanation.to_text(top=top))
        elif args.command == "runs":
            from ig_airflow.identity import find_runs

            found = find_runs(args.root)
            if args.json:
                print(json.dumps(found, indent=2))
            for run in [] if args.json else found:
                fields = [run.get(k, "-") for k in ("partition", "model_version", "run_id")]
                print("\t".join([*fields, run["uri"]]))
        elif args.command == "demo" and args.demo_command == "prepare":
            from ig_airflow.demo.prepare import prepare_demo

            paths = prepare_demo(
                args.out, seed=args.seed, tensorflow=args.tensorflow, torch_loader=args.torch_loader
            )
            print(json.dumps(paths, indent=2))
    except IGAirflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
