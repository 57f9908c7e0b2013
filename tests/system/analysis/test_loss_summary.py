"""What drives errors, on two short real runs of the Adult demo (validated, explained with
``ig.loss``, summarised, drift against the history, the report): the loss summary and its
totals, the history's loss importance per run, the drift stage's change in loss importance when
the second day's ``age`` is corrupted against the label, the report's "What drives errors"
section; and a label that does not map failing the run before Ray starts."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from markupsafe import escape

from ig_airflow.analysis.aggregation import summarise_run
from ig_airflow.analysis.drift import read_history
from ig_airflow.analysis.loss import summarise_loss
from ig_airflow.analysis.report import build_report
from ig_airflow.config import parse_run_config
from ig_airflow.exceptions import InputDataError
from ig_airflow.io import read_json, read_parquet, write_parquet
from ig_airflow.layout import RunLayout
from ig_airflow.pipeline import run_ig, run_pipeline
from ig_airflow.results import attribution_column, loss_attribution_column, output_schema

ROWS = 80


def config(demo: dict[str, str], source: Path, root: Path, day: str, **overrides: dict) -> object:
    raw = {
        "model": {"uri": demo["artifact"]},
        "data": {
            "input_uri": str(source),
            "id_columns": ["row_id"],
            "reference_uri": demo["train"],
            "label_column": "label",
        },
        "ig": {"loss": "auto"},
        "ray": {"enabled": False},
        "quality": {"enabled": False},
        "drift": {
            "reference_uri": "previous_run",
            "history_uri": str(root / "history.parquet"),
            "resamples": 20,
        },
        "output": {"uri": str(root / day)},
        **overrides,
    }
    return parse_run_config(raw, f"test_loss_summary {day}", {})


@pytest.fixture(scope="module")
def runs(demo, demo_frames, tmp_path_factory) -> Path:
    """Day 1: test rows, one without a label; day 2: other rows whose age was corrupted against
    the label (20 for people earning over 50K, 60 for the others; the labels are right)."""
    root = tmp_path_factory.mktemp("loss")
    test = demo_frames[1]
    first = test.iloc[:ROWS].copy()
    first["label"] = first["label"].astype("float64")
    first.loc[first.index[0], "label"] = np.nan
    second = test.iloc[ROWS : 2 * ROWS].copy()
    second["age"] = np.where(second["label"] == 1, 20.0, 60.0)
    for day, rows in (("2024-01-01", first), ("2024-01-02", second)):
        rows.to_parquet(root / f"{day}.parquet", index=False)
        run_pipeline(config(demo, root / f"{day}.parquet", root, day), run_key=day)
    return root


def test_summary_history_drift_and_report_carry_the_loss_importance(runs: Path) -> None:
    first, second = RunLayout(str(runs / "2024-01-01")), RunLayout(str(runs / "2024-01-02"))
    summary = read_parquet(first.summary.table("loss")).to_pandas()
    assert len(summary) == 14 and (summary["rows"] == ROWS - 1).all()  # the unlabelled row is left out
    assert summary["rank"].tolist() == list(range(1, 15))
    assert summary["mean_loss_attribution"].is_monotonic_decreasing
    totals = read_json(first.summary.json)["loss"]
    assert totals["rows"] == ROWS - 1 and totals["share_converged"] == 1.0
    assert totals["top_features"] == summary["feature"].head(5).tolist()
    attributions = pd.read_parquet(first.attributions)
    losses = attributions[[c for c in attributions if c.startswith("loss_attr__")]]
    np.testing.assert_allclose(
        summary.set_index("feature")["mean_loss_attribution"],
        losses.mean().rename(lambda c: c.removeprefix("loss_attr__")).loc[summary["feature"]],
        atol=1e-12,
    )
    assert attributions["loss"].isna().sum() == 1 and attributions["prediction"].notna().all()

    history = read_history(str(runs / "history.parquet"))
    age = history[history["feature"] == "age"].set_index("run_key")["mean_loss_attribution"]
    assert age["2024-01-02"] > age["2024-01-01"] + 0.2  # the corrupted age raises the loss
    assert read_json(second.summary.json)["loss"]["top_features"][0] == "age"

    change = read_json(second.drift.json)["loss_importance"]
    assert change["features"][0]["feature"] == "age" and change["features"][0]["change"] > 0.2
    assert change["mean_loss"]["current"] > change["mean_loss"]["reference"]

    page = Path(second.report.html).read_text()
    errors = re.search(r'<section id="errors">(.*?)</section>', page, re.S).group(1)
    assert "What drives errors" in errors and errors.count("<img") == 2  # bars and over time
    assert read_json(second.manifest)["loss"]["kind"] == "log_loss"  # ig.loss: auto, resolved
    assert "(log_loss)" in errors
    assert "age" in errors and (Path(second.report.html).parent / "loss_over_time.png").exists()


def test_a_label_that_does_not_map_fails_before_ray_starts(demo, demo_frames, tmp_path) -> None:
    ray = pytest.importorskip("ray")
    rows = demo_frames[1].iloc[:40].copy()
    rows.loc[rows.index[-1], "label"] = 7  # past the rows explained before the shards are handed out
    rows.to_parquet(tmp_path / "rows.parquet", index=False)
    settings = config(demo, tmp_path / "rows.parquet", tmp_path, "bad", ray={"enabled": True, "num_cpus": 1})
    with pytest.raises(InputDataError, match=r"label column 'label': value 7 does not map"):
        run_ig(settings)
    assert not ray.is_initialized()
    assert not Path(RunLayout(str(tmp_path / "bad")).attributions).exists()


PAYLOADS = ["<script>document.body.dataset.pwned = 1</script>", "<img src=x onerror=alert(1)>", "$x^$", "age"]


def test_the_errors_section_escapes_feature_names(tmp_path) -> None:
    """Feature names carrying HTML/JS reach the "What drives errors" section escaped (jinja2
    autoescape) and are drawn literally in its plot (no mathtext)."""
    rng = np.random.default_rng(0)
    n = 30
    data: dict = {"row_id": np.arange(n)}
    for feature in PAYLOADS:
        data[attribution_column(feature)] = rng.normal(size=n)
    data.update(
        prediction=rng.random(n),
        baseline_prediction=np.full(n, 0.3),
        delta=np.zeros(n),
        completeness_error=np.zeros(n),
        n_steps=np.full(n, 9),
        converged=np.full(n, True),
    )
    for i, feature in enumerate(PAYLOADS):
        data[loss_attribution_column(feature)] = rng.normal(size=n) + i
    data.update(loss=rng.random(n), loss_at_baseline=np.full(n, 0.6), loss_delta=np.zeros(n))
    data.update(loss_n_steps=np.full(n, 9), loss_converged=np.full(n, True))
    schema = output_schema([pa.field("row_id", pa.int64())], PAYLOADS, {}, loss=True)
    layout = RunLayout(str(tmp_path / "run"))
    write_parquet(layout.attributions, pa.Table.from_pydict(data, schema=schema))
    summarise_run(layout.attributions, layout.summary.root)
    assert summarise_loss(layout.attributions, layout.summary.root)["top_features"][0] == "age"
    page = Path(build_report(str(tmp_path / "run"), ["row_id"])).read_text()
    errors = re.search(r'<section id="errors">(.*?)</section>', page, re.S).group(1)
    assert "<script" not in errors and "<img src=x" not in errors
    for feature in PAYLOADS:
        assert f"<td>{escape(feature)}</td>" in errors
