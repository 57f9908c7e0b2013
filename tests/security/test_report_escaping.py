"""The HTML report treats every string from a run as untrusted: feature, layer and id-column
names, ids, run keys, category labels, run identity, drift alert evidence, quarantine reasons
and values carrying HTML/JS payloads are escaped (no script runs in headless Chromium), ``$...$``
names are drawn literally (no mathtext crash), and a run folder on any fsspec URI
(``memory://``) gets its report there and nothing on the local disk."""

from __future__ import annotations

import base64
import builtins
import re
import uuid
from io import BytesIO
from pathlib import Path

import fsspec
import matplotlib
import matplotlib.figure
import matplotlib.text
import numpy as np
import pyarrow as pa
import pytest
from conftest import dump_dom
from markupsafe import escape

from ig_airflow.analysis.aggregation import feature_summary, summarise_run
from ig_airflow.analysis.cohorts import summarise_cohorts
from ig_airflow.analysis.drift import append_history, summarise_drift
from ig_airflow.analysis.report import build_report, literal_text, plot_importance
from ig_airflow.config import CohortSection, DriftSection
from ig_airflow.dataset import open_dataset
from ig_airflow.io import read_json, write_json, write_parquet
from ig_airflow.layout import RunLayout
from ig_airflow.results import RESULT_COLUMNS, attribution_column, layer_column, output_schema

IMG = "<img src=x onerror=\"document.body.setAttribute('data-pwned','1')\">"
SCRIPT = "<script>document.body.setAttribute('data-pwned','2')</script>"
MATH_BAD = "$x^$"  # an unbalanced mathtext expression: a ValueError when parsed
MATH_OK = r"$\alpha$"  # balanced: drawn as a Greek letter when parsed
TEMPLATE = "{{ 7*7 }}"  # template syntax in data is text, never evaluated
FEATURES = [IMG, SCRIPT, MATH_BAD, MATH_OK, TEMPLATE, "age"]
LAYER = "<svg onload=\"document.body.setAttribute('data-pwned','3')\">"
SEGMENT = "<i onmouseover=\"document.body.setAttribute('data-pwned','4')\">segment</i>"
IDS = [
    "<script>document.body.setAttribute('data-pwned','5')</script>",
    "\"><img src=x onerror=\"document.body.setAttribute('data-pwned','6')\">",
    MATH_BAD,
]
SEGMENTS = ["<b>a</b>", MATH_OK, "'><svg onload=\"document.body.setAttribute('data-pwned','8')\">"]
RUN_KEYS = ("<script>document.body.setAttribute('data-pwned','7')</script>", MATH_BAD)
CATEGORY = TEMPLATE  # the categorical feature: its labels carry payloads
LABELS = [
    "<b onmouseover=\"document.body.setAttribute('data-pwned','9')\">label</b>",
    "<img src=x onerror=\"document.body.setAttribute('data-pwned','10')\">",
    MATH_BAD,
]
RUN_IDENTITY = {  # the manifest's run: partition, model version, run id
    "partition": "<script>document.body.setAttribute('data-pwned','11')</script>",
    "model_version": "<svg onload=\"document.body.setAttribute('data-pwned','12')\">",
    "run_id": "\"><iframe srcdoc=\"<script>parent.document.body.setAttribute('data-pwned','13')</script>\">",
}
REASON = "<script>document.body.setAttribute('data-pwned','14')</script>"  # a user expectation's name
QUARANTINED_VALUE = "<img src=x onerror=\"document.body.setAttribute('data-pwned','15')\">"
MAPPED_VALUE = "<svg onload=\"document.body.setAttribute('data-pwned','16')\">"
EVIDENCE = "<img src=x onerror=\"document.body.setAttribute('data-pwned','17')\">"
REFERENCE = {"age": 3.0, MATH_BAD: 2.0, IMG: 0.3, SCRIPT: 0.2, MATH_OK: 0.5, TEMPLATE: 0.4}
CURRENT = {"age": 0.1, MATH_BAD: 0.2, IMG: 2.5, SCRIPT: 3.0, MATH_OK: 0.5, TEMPLATE: 0.4}


def attributions(weights: dict[str, float], seed: int, n: int = 40) -> pa.Table:
    """An attributions table (ig_airflow.results schema) with payload ids and a payload layer
    of 4 units, one of them never attributed."""
    rng = np.random.default_rng(seed)
    id_fields = [pa.field("row_id", pa.string()), pa.field(SEGMENT, pa.string())]
    schema = output_schema(id_fields, FEATURES, {LAYER: 4})
    data: dict[str, object] = {
        "row_id": [f"{IDS[i]}" if i < len(IDS) else f"row {i}" for i in range(n)],
        SEGMENT: [SEGMENTS[i % len(SEGMENTS)] for i in range(n)],
    }
    for feature in FEATURES:
        data[attribution_column(feature)] = rng.normal(size=n) * weights[feature]
    prediction = np.linspace(0.9, 0.1, n)  # the payload ids are the top rows
    data.update(
        prediction=prediction,
        baseline_prediction=np.full(n, 0.3),
        delta=np.zeros(n),
        completeness_error=np.zeros(n),
        n_steps=np.full(n, 64),
        converged=np.full(n, True),
    )
    for unit in range(4):
        data[layer_column(LAYER, unit)] = rng.normal(size=n) if unit else np.zeros(n)
    data[f"layer_delta__{LAYER}"] = np.zeros(n)
    data[f"layer_n_steps__{LAYER}"] = np.full(n, 64)
    assert set(RESULT_COLUMNS) <= set(data)
    return pa.Table.from_pydict(data, schema=schema)


def explained_rows(n: int = 40) -> pa.Table:
    """The rows the run explained (same ids and order as :func:`attributions`): numbers, and
    the categorical feature's payload labels."""
    rng = np.random.default_rng(3)
    data: dict[str, object] = {
        "row_id": [f"{IDS[i]}" if i < len(IDS) else f"row {i}" for i in range(n)],
        SEGMENT: [SEGMENTS[i % len(SEGMENTS)] for i in range(n)],
    }
    for feature in FEATURES:
        data[feature] = (
            [LABELS[i % len(LABELS)] for i in range(n)] if feature == CATEGORY else rng.normal(size=n)
        )
    return pa.table(data)


def write_validation(layout: RunLayout) -> None:
    """A validation report and quarantine with payload reasons, quarantined and mapped values."""
    reason = f"expect_column_values_to_be_in_set({CATEGORY})"
    quarantine = explained_rows(3).to_pydict()
    quarantine[CATEGORY] = [QUARANTINED_VALUE, QUARANTINED_VALUE, "fine"]
    quarantine["_row_number"] = [40, 41, 42]
    quarantine["_quarantine_reason"] = [reason, f"{reason}; {REASON}", REASON]
    write_parquet(layout.validation.quarantine, pa.table(quarantine))
    report = {
        "rows": {"input": 43, "validated": 40, "quarantined": 3, "mapped_to_default": 2},
        "quarantine_reasons": {reason: 2, REASON: 2},
        "mapped": {CATEGORY: {MAPPED_VALUE: 2}},
        "outputs": {"quarantine": layout.validation.quarantine},
    }
    write_json(layout.validation.report, report)


def write_run(root: str) -> tuple[str, str]:
    """A run folder under ``root`` (local path or fsspec URI) with a manifest, its explained
    rows, summaries (categories included), validation with quarantined rows, a drift against a
    reference run (an alert carrying payload evidence) and a two-run history, all with payload
    names and values; returns (run, history)."""
    reference, run = f"{root}/reference", f"{root}/run"
    write_parquet(RunLayout(reference).attributions, attributions(REFERENCE, seed=1))
    layout = RunLayout(run)
    write_parquet(layout.attributions, attributions(CURRENT, seed=2))
    inputs = f"{root}/explained_rows.parquet"
    write_parquet(inputs, explained_rows())
    summarise_run(layout.attributions, layout.summary.root, inputs, [CATEGORY], ["row_id", SEGMENT])
    cohort = CohortSection(column=SEGMENT, min_rows=1)  # a payload column, payload segments
    summarise_cohorts(layout.attributions, layout.summary.root, open_dataset(inputs), [cohort])
    history = f"{root}/history.parquet"
    ref_uri = RunLayout(reference).attributions
    append_history(history, RUN_KEYS[0], feature_summary(ref_uri), {"attributions_uri": ref_uri})
    settings = DriftSection(reference_uri=ref_uri, history_uri=history, top_k=2)
    summarise_drift(layout.attributions, layout.drift.root, settings, RUN_KEYS[1])
    drift = read_json(layout.drift.json)
    drift["alerts"][0].update(effect=EVIDENCE, ci95=[0.1, 0.2], p_value=0.001)  # evidence fields
    write_json(layout.drift.json, drift)
    write_validation(layout)
    manifest = {
        "run": RUN_IDENTITY,
        "rows": {"explained": 40},
        "id_columns": ["row_id", SEGMENT],
        "input_uri": inputs,
        "outputs": {"attributions": layout.attributions},
        "completeness": {"rows": 40, "unconverged_rows": 0, "mean_error": 0.0, "max_error": 0.0},
        "baseline": {CATEGORY: LABELS[0], "age": 30.0},
    }
    write_json(layout.manifest, manifest)
    return run, history


def test_payload_names_are_escaped_and_no_script_runs_in_chromium(tmp_path: Path) -> None:
    run, history = write_run(str(tmp_path))
    drift = read_json(RunLayout(run).drift.json)
    assert {SCRIPT, IMG} <= set(drift["entered_top_k"]) and drift["left_top_k"]
    assert {f for a in drift["alerts"] for f in a["features"]} & {SCRIPT, IMG}
    page = Path(build_report(run, ["row_id", SEGMENT], history, waterfall_rows=3))
    source = page.read_text()
    pngs = sorted(p.name for p in page.parent.glob("*.png"))
    assert len(pngs) == 9, pngs  # importance, beeswarm, cohort, layer, drift, over time, 3 waterfalls
    # every payload is in the page, escaped; the only script element is the report's own
    assert source.count("<script") == 1 and "<img src=x" not in source and "<svg" not in source
    assert "<iframe" not in source and "<b onmouseover" not in source
    assert "&lt;script&gt;document.body.setAttribute(&#39;data-pwned&#39;,&#39;2&#39;)" in source
    payloads = [*FEATURES, LAYER, SEGMENT, *IDS, *SEGMENTS, *LABELS, *RUN_IDENTITY.values()]
    for text in [*payloads, REASON, QUARANTINED_VALUE, MAPPED_VALUE, EVIDENCE]:
        assert str(escape(text)) in source, text
    assert f"<code>{escape(LAYER)}</code>" in source and "4 units; 1 with no attribution" in source
    assert f"Cohort: <code>{escape(SEGMENT)}</code>" in source and f"<td>{escape(SEGMENTS[0])}</td>" in source
    entered = ", ".join(str(escape(f)) for f in drift["entered_top_k"])
    assert f"entered top k: {entered}" in source
    assert f"<td>{TEMPLATE}</td>" in source
    # the sections that show run values: category labels, quarantine, waterfall values, evidence
    assert f"<td>{escape(LABELS[1])}</td>" in source  # a category label in a table
    assert f"{escape(CATEGORY)} = {escape(QUARANTINED_VALUE)}" in source  # a value that failed
    assert f"effect {escape(EVIDENCE)}" in source and "interval of the effect [0.1000, 0.2000]" in source
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'<img src="([^"]*)"', source))
    dom = dump_dom(page, tmp_path / "profile")
    # the payload text is in the DOM as text; an executed payload would add the attribute
    assert "</body>" in dom and "data-pwned=" not in dom
    images = re.search(r'data-images="(\d+)"', dom)
    loaded = re.search(r'data-images-loaded="(\d+)"', dom)
    assert images and loaded, dom[-2000:]
    assert int(images.group(1)) == int(loaded.group(1)) == len(pngs) > 0


def test_the_airflow_views_escape_every_payload_in_chromium(tmp_path: Path) -> None:
    """The pages of the Airflow plugin (ig_airflow.ui) show the same payloads as text: run
    identity, features, drift alerts, history run keys, the DAG and DAG run ids, a row id typed
    in the why box; no script runs."""
    from ig_airflow.ui import pages
    from ig_airflow.ui.runs import DagRunFolders, RunFolder

    run, history = write_run(str(tmp_path))
    layout = RunLayout(run)
    manifest = {
        "run": {"model_version": IMG, "partition": SCRIPT, "run_id": IDS[1]},
        "rows": {"explained": 40},
        "completeness": {"unconverged_rows": 0, "mean_error": 0.0},
        "outputs": {"attributions": layout.attributions},
        "id_columns": ["row_id", SEGMENT],
        "input_uri": layout.attributions,
    }
    write_json(layout.manifest, manifest)
    folders = [RunFolder(run, ["compute_ig"], history)]
    why, status = pages.why_page(SCRIPT, IMG, 0, run, IDS[0])  # one value for two id columns
    html = {
        "run": pages.run_page(SCRIPT, IMG, folders),
        "dag": pages.dag_page(SCRIPT, [DagRunFolders(IMG, folders)]),
        "history": pages.history_page(SCRIPT, IMG, history),
        "why": why,
    }
    assert status == 400 and str(escape(IDS[0])) in why and "give a value for each" in why
    assert str(escape(SCRIPT)) in html["run"] and str(escape(IMG)) in html["dag"]
    assert str(escape(RUN_KEYS[0])) in html["history"]
    for name, source in html.items():
        assert "<script" not in source and "<img src=x" not in source and "<svg" not in source, name
        page = tmp_path / f"{name}.html"
        page.write_text(source)
        dom = dump_dom(page, tmp_path / f"profile_{name}")
        assert "</body>" in dom and "data-pwned=" not in dom, name


def test_the_same_payload_unescaped_does_run_in_chromium(tmp_path: Path) -> None:
    """The control: this Chromium setup runs injected handlers, so their absence above counts."""
    page = tmp_path / "control.html"
    page.write_text(f"<!doctype html><html><body>{IMG}</body></html>")
    assert 'data-pwned="1"' in dump_dom(page, tmp_path / "profile")


def test_mathtext_names_would_crash_a_default_plot() -> None:
    """The control: matplotlib's default parses ``$x^$`` as mathtext and fails on it."""
    import pandas as pd

    summary = pd.DataFrame(
        {"feature": [MATH_BAD, "age"], "mean_abs_attribution": [1.0, 0.5], "mean_attribution": [0.2, 0.1]}
    )
    fig = matplotlib.figure.Figure()
    fig.add_subplot().set_yticks([0, 1], summary["feature"])
    with pytest.raises(ValueError):
        fig.savefig(BytesIO(), format="png")
    root = f"memory://{uuid.uuid4().hex}"
    plot_importance(summary, f"{root}/importance.png")  # the report's own plot does not
    fs, _ = fsspec.core.url_to_fs(root)
    assert fs.cat(f"{root}/importance.png")[:4] == b"\x89PNG"
    fs.rm(root, recursive=True)


def test_every_plot_text_is_literal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with literal_text():
        assert matplotlib.rcParams["text.parse_math"] is False
        assert matplotlib.rcParams["text.usetex"] is False
    assert matplotlib.rcParams["text.parse_math"] is True  # restored afterwards
    texts: list[matplotlib.text.Text] = []
    savefig = matplotlib.figure.Figure.savefig

    def spy(fig: matplotlib.figure.Figure, *args: object, **kwargs: object) -> None:
        savefig(fig, *args, **kwargs)  # drawn: tick labels, titles, legends all exist now
        texts.extend(t for t in fig.findobj(matplotlib.text.Text) if t.get_text())

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    run, history = write_run(str(tmp_path))
    build_report(run, ["row_id", SEGMENT], history, waterfall_rows=3)
    drawn = {t.get_text() for t in texts}
    assert {MATH_BAD, MATH_OK, *RUN_KEYS} <= drawn  # tick labels, legend entries
    assert any(MATH_BAD in t and "Waterfall for" in t for t in drawn)  # a title with an id
    assert [t.get_text() for t in texts if t.get_parse_math()] == []


def test_report_of_a_memory_run_folder_writes_nothing_locally(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = f"memory://{uuid.uuid4().hex}"
    fs, _ = fsspec.core.url_to_fs(root)
    run, history = write_run(root)
    local_writes: list[str] = []
    real_open = builtins.open

    def spy_open(file: object, mode: str = "r", *args: object, **kwargs: object) -> object:
        if any(flag in mode for flag in "wax+"):
            local_writes.append(str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(builtins, "open", spy_open)
    try:
        page = build_report(run, ["row_id"], history, waterfall_rows=2)
        monkeypatch.undo()
        assert page == RunLayout(run).report.html and page.startswith("memory://")
        names = sorted(p.rpartition("/")[2] for p in fs.ls(RunLayout(run).report.root, detail=False))
        expected = ["beeswarm.png", "cohort_0.png", "drift.png", "importance.png", "importance_over_time.png"]
        expected.append("layer_0.png")
        assert names == sorted([*expected, "report.html", "waterfall_0.png", "waterfall_1.png"])
        pngs = [n for n in names if n.endswith(".png")]
        assert all(fs.cat(RunLayout(run).report.image(n))[:4] == b"\x89PNG" for n in pngs)
        source = fs.cat(page).decode()
        embedded = re.findall(r'<img src="data:image/png;base64,([^"]*)"[^>]*data-file="([^"]*)"', source)
        assert sorted(name for _, name in embedded) == pngs  # every image in the page, and its copy beside
        assert all(base64.b64decode(data) == fs.cat(RunLayout(run).report.image(n)) for data, n in embedded)
        assert local_writes == [] and list(tmp_path.iterdir()) == []
    finally:
        fs.rm(root, recursive=True)
