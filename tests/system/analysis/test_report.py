"""The report people read, on two real runs of the Adult demo (validated, explained, quality
measured, drift against the history): one self-contained page that opens in headless Chromium
with every image loaded and every section present; category labels from the vocabulary; each
waterfall step with the row's value; quarantine counts by reason with examples; completeness
with the worst rows; drift alerts with their evidence; and on the first run "no reference yet",
never a green all-clear."""

from __future__ import annotations

import base64
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import dump_dom

from ig_airflow.analysis.drift import read_history
from ig_airflow.analysis.report import EVIDENCE_LABELS, build_report, history_intervals
from ig_airflow.artifacts import read_metadata
from ig_airflow.config import parse_run_config
from ig_airflow.io import read_json
from ig_airflow.layout import RunLayout
from ig_airflow.pipeline import run_pipeline

UNSEEN = "Starship-crew"  # a workclass the model never saw: validation quarantines the row
SECTIONS = ["glance", "importance", "beeswarm", "categories", "drift", "over-time", "quality"]
SECTIONS += ["quarantine", "completeness", "waterfalls"]


def rows_with_bad_ones(rows: pd.DataFrame, first_id: int) -> pd.DataFrame:
    """``rows`` and three bad copies with new ids: two with an unseen workclass, one with no age."""
    bad = rows.head(3).copy()
    bad["row_id"] = np.arange(first_id, first_id + 3)
    bad["workclass"] = [UNSEEN, UNSEEN, "Private"]
    bad["age"] = [40.0, 41.0, None]
    return pd.concat([rows, bad], ignore_index=True)


def explain(demo: dict[str, str], rows: pd.DataFrame, root: Path, day: str, **quality) -> dict:
    """Run the whole pipeline on ``rows`` (validation, IG, aggregation, quality, drift against
    the previous run in the history, the report); returns the run manifest."""
    source = root / f"{day}.parquet"
    rows.to_parquet(source, index=False)
    raw = {
        "model": {"uri": demo["artifact"]},
        "data": {"input_uri": str(source), "id_columns": ["row_id"], "reference_uri": demo["train"]},
        "ig": {"n_steps": 32, "tolerance": 0.01},
        "ray": {"enabled": False},
        "quality": {"sample_rows": 48, "randomisation": False, "sensitivity_rows": 8, **quality},
        "drift": {
            "reference_uri": "previous_run",
            "history_uri": str(root / "history.parquet"),
            "waterfall_rows": 2,
        },
        "output": {"uri": str(root / day)},
    }
    return run_pipeline(parse_run_config(raw, f"test_report {day}", {}), run_key=day)


@pytest.fixture(scope="module")
def runs(demo, demo_frames, tmp_path_factory) -> dict[str, Path]:
    """Two days of test rows (each with three bad rows) explained by the pipeline; the second
    day's people are all 50 or older (a shift the attributions show: real drift alerts)."""
    root = tmp_path_factory.mktemp("report")
    test = demo_frames[1]
    older = test.iloc[400:][test["age"].iloc[400:] >= 50].head(400)
    explain(demo, rows_with_bad_ones(test.iloc[:400], 9_000_000), root, "2024-01-01", enabled=False)
    explain(demo, rows_with_bad_ones(older, 9_100_000), root, "2024-01-02")
    return {"first": root / "2024-01-01", "second": root / "2024-01-02", "history": root / "history.parquet"}


def section(source: str, name: str) -> str:
    found = re.search(rf'<section id="{name}">(.*?)</section>', source, re.S)
    assert found, f"no section {name}"
    return found.group(1)


def text_of(html: str) -> str:
    """The text of ``html`` as read: tags dropped, runs of white space one space."""
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))
    return re.sub(r" ([:;,.])", r"\1", text)


def test_the_report_opens_with_every_image_loaded_and_every_section_present(runs, tmp_path: Path) -> None:
    page = RunLayout(str(runs["second"])).report.html
    source = Path(page).read_text()
    alone = tmp_path / "alone" / "report.html"  # the page by itself, none of the PNGs beside it
    alone.parent.mkdir()
    shutil.copy(page, alone)
    dom = dump_dom(alone, tmp_path / "profile")
    images = int(re.search(r'data-images="(\d+)"', dom).group(1))
    loaded = int(re.search(r'data-images-loaded="(\d+)"', dom).group(1))
    # importance, beeswarm, drift, over time, deletion and insertion curves, two waterfalls
    assert images == loaded == 8, (images, loaded)
    for name in SECTIONS:
        assert f'<section id="{name}">' in dom, name
    # one file: every image is embedded, none is fetched from beside the page or elsewhere
    sources = re.findall(r'<img src="([^"]*)"', source)
    assert len(sources) == 8 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert all(base64.b64decode(s.partition(",")[2])[:4] == b"\x89PNG" for s in sources)
    assert not re.search(r'(href|src)="(https?:|//|[^"#d])', source)  # no link out of the page
    glance = text_of(section(source, "glance"))
    assert "Rows explained: 400" in glance and "Quarantined: 3 of 403 input rows" in glance
    assert "Quality: passed" in glance or "Quality: FAILED" in glance


def test_categories_are_shown_by_their_labels(runs) -> None:
    manifest = read_json(RunLayout(str(runs["second"])).manifest)
    spec = read_metadata(manifest["artifact"]["uri"]).inputs
    vocabulary = {f.name: f.vocabulary for f in spec.categorical}
    source = Path(RunLayout(str(runs["second"])).report.html).read_text()
    categories = section(source, "categories")
    cells = re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td>", categories)
    assert {feature for feature, _ in cells} == set(vocabulary)
    assert all(value in vocabulary[feature] for feature, value in cells), cells
    assert "<td>Never-married</td>" in categories or "<td>Married-civ-spouse</td>" in categories


def test_each_waterfall_step_shows_the_rows_value(runs, demo_frames) -> None:
    source = Path(RunLayout(str(runs["second"])).report.html).read_text()
    waterfalls = section(source, "waterfalls")
    labels = re.findall(r"<h3>row_id=(\d+)</h3>", waterfalls)
    assert len(labels) == 2
    rows = demo_frames[1].set_index("row_id")
    for row_id, table in zip(labels, waterfalls.split("<h3>")[1:], strict=True):
        values = dict(re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td>", table))
        assert len(values) == 10  # the 10 largest steps, each with the row's value
        assert 'data-file="waterfall_' in table
        row = rows.loc[int(row_id)]
        for feature, shown in values.items():
            assert shown == shown_value(row[feature]), (feature, shown)


def shown_value(value: object) -> str:
    """A value as the report shows it: a label as it is, a whole number without decimals,
    any other number with 4 significant digits."""
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else f"{value:.4g}"


def test_quarantine_shows_counts_by_reason_and_examples(runs) -> None:
    layout = RunLayout(str(runs["second"]))
    reasons = read_json(layout.validation.report)["quarantine_reasons"]
    assert sum(reasons.values()) == 3 and any("workclass" in r for r in reasons), reasons
    quarantine = text_of(section(Path(layout.report.html).read_text(), "quarantine"))
    assert "3 of 403 input rows were quarantined" in quarantine
    for reason, count in reasons.items():
        assert f"{reason} {count}" in quarantine, (reason, quarantine)
    assert f"workclass = {UNSEEN}" in quarantine  # an example with the value that failed
    assert "row_id=9100000" in quarantine and "row_id=9100002" in quarantine


def test_completeness_shows_the_share_converged_and_the_worst_rows(runs) -> None:
    layout = RunLayout(str(runs["second"]))
    attributions = pd.read_parquet(layout.attributions)
    share = f"{attributions['converged'].mean():.1%}"
    html = section(Path(layout.report.html).read_text(), "completeness")
    assert f"{share} of the explained rows converged" in text_of(html)
    worst = attributions.nlargest(5, "completeness_error")
    listed = re.findall(r"<tr><td>(\d+)</td><td>[^<]*</td><td>[^<]*</td><td>([^<]*)</td>", html)
    assert [int(i) for i, _ in listed] == worst["row_id"].tolist()
    assert [float(e) for _, e in listed] == pytest.approx(worst["completeness_error"].tolist(), abs=1e-4)


def test_drift_alerts_carry_their_evidence_and_importance_its_intervals(runs) -> None:
    layout = RunLayout(str(runs["second"]))
    drift = read_json(layout.drift.json)
    assert drift["reference"] and drift["alerts"], drift.get("note")
    assert "age" in {f for a in drift["alerts"] for f in a["features"]}  # the second day is older
    source = Path(layout.report.html).read_text()
    html = section(source, "drift")
    text = text_of(html)
    assert f"{len(drift['alerts'])} alert(s)" in html and "No reference yet" not in html
    for alert in drift["alerts"]:
        assert f"<b>{alert['metric']}</b> = {alert['value']:.4f}" in html
        for name in set(alert) - {"metric", "value", "threshold", "features"}:  # the statistics behind it
            assert f"{EVIDENCE_LABELS.get(name, name)} " in text, name
        if "effect" in alert:
            assert f"effect {alert['effect']:.4f}" in text
            low, high = alert["ci95"]
            assert f"95% interval of the effect [{low:.4f}, {high:.4f}]" in text
        if "p_adjusted" in alert:
            assert f"Holm-adjusted p-value {alert['p_adjusted']:.2g}" in text
    assert re.search(r"<code>age</code>: share \d+\.\d% -&gt; \d+\.\d%, rank \d+ -&gt; \d+", html)
    features = pd.DataFrame(drift["features"]).set_index("feature")
    importance = section(source, "importance")
    if "current_mean_abs_ci_low" in features:  # the drift stage's bootstrap intervals
        low, high = features.loc["age", ["current_mean_abs_ci_low", "current_mean_abs_ci_high"]]
        assert "<th>95% interval</th>" in importance and f"[{low:.4f}, {high:.4f}]" in importance
        assert "whiskers are 95% intervals" in importance
    over_time = section(source, "over-time")
    assert 'data-file="importance_over_time.png"' in over_time and "2 runs" in text_of(over_time)
    if history_intervals(read_history(str(runs["history"]))) is not None:
        assert "95% intervals" in over_time and "Intervals of the latest run" in over_time


def test_a_first_run_says_no_reference_yet_and_no_all_clear(runs) -> None:
    layout = RunLayout(str(runs["first"]))
    assert read_json(layout.drift.json)["reference"] is None
    source = Path(layout.report.html).read_text()
    drift = section(source, "drift")
    assert "No reference yet" in drift and "drift was not assessed" in text_of(drift)
    assert "No drift alert" not in source and 'class="ok"' not in drift
    glance = section(source, "glance")
    assert '<li class="neutral"><b>Drift</b>: no reference yet' in glance
    assert "one run so far" in text_of(section(source, "over-time"))
    assert '<section id="quality">' not in source  # the stage did not run on the first day


def test_a_copy_of_the_run_folder_rebuilds_its_report_with_values_drawn_beside_each_step(
    runs, demo_frames, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """build_report on a finished run folder alone (no config: ids, inputs and validation from
    its manifest): the same sections, and the waterfall's ticks read ``feature = value``."""
    import matplotlib.figure
    import matplotlib.text

    run = tmp_path / "run"
    shutil.copytree(runs["second"], run)
    shutil.rmtree(run / "report")
    ticks: list[list[str]] = []
    savefig = matplotlib.figure.Figure.savefig

    def spy(fig: matplotlib.figure.Figure, *args: object, **kwargs: object) -> None:
        savefig(fig, *args, **kwargs)
        title = fig.axes[0].get_title()
        if title.startswith("Waterfall for"):
            ticks.append([t.get_text() for t in fig.axes[0].get_yticklabels()])

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    page = Path(build_report(str(run), history_uri=str(runs["history"]), waterfall_rows=1))
    source = page.read_text()
    for name in SECTIONS:
        assert f'<section id="{name}">' in source, name
    assert source.count("<img ") == 7 and sorted(p.name for p in page.parent.glob("waterfall_*")) == [
        "waterfall_0.png"
    ]
    row_id = int(re.search(r"<h3>row_id=(\d+)</h3>", source).group(1))
    row = demo_frames[1].set_index("row_id").loc[row_id]
    assert len(ticks) == 1 and len(ticks[0]) == 11 and ticks[0][-1].endswith("other features")
    for tick in ticks[0][:-1]:
        feature, _, value = tick.partition(" = ")
        assert value == shown_value(row[feature])[:24], tick
