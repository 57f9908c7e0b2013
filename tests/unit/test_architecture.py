"""The package's shape, checked by tools rather than by review: import-linter contracts (layers,
no framework in the neutral core, independent backends, Airflow only in operators), no import
cycle, short functions, run-folder paths only in ``layout.py``, no framework branch outside
``backends/``, and a package import that loads no framework."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "ig_airflow"
LIBRARY = [p for p in PACKAGE.rglob("*.py") if not {"demo", "testing"} & set(p.relative_to(PACKAGE).parts)]
MAX_FUNCTION_LINES = 60


def test_import_linter_contracts_are_kept() -> None:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert lint, "import-linter is a test dependency (pip install -e '.[test]')"
    result = subprocess.run([lint], cwd=PACKAGE.parent, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_inside_the_package() -> None:
    grimp = pytest.importorskip("grimp")  # import-linter's engine
    graph = grimp.build_graph("ig_airflow")
    edges = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    assert strongly_connected(edges) == []
    # the check can fail: a made-up cycle is found
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def long_functions(paths: list[Path]) -> list[str]:
    found = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    found.append(f"{path}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_library_function_is_longer_than_60_lines(tmp_path: Path) -> None:
    assert long_functions(LIBRARY) == []
    long = tmp_path / "long.py"
    long.write_text("def f():\n" + "    x = 1\n" * MAX_FUNCTION_LINES)
    assert len(long_functions([long])) == 1


def string_constants(path: Path) -> list[tuple[int, str]]:
    return [
        (node.lineno, node.value)
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


def test_run_folder_paths_exist_only_in_layout() -> None:
    layout = PACKAGE / "layout.py"
    file_names = {v for _, v in string_constants(layout) if v.endswith((".parquet", ".json", ".html"))}
    assert {"manifest.json", "gx_result.json", "report.html", "summary.json"} <= file_names
    outside = [
        f"{path.relative_to(PACKAGE)}:{line} {value!r}"
        for path in LIBRARY
        if path != layout
        for line, value in string_constants(path)
        if value in file_names
    ]
    assert outside == []
    joins = [
        str(path.relative_to(PACKAGE))
        for path in LIBRARY
        if path.name not in ("layout.py", "io.py") and "join_uri(" in path.read_text()
    ]
    assert joins == []


def test_framework_names_appear_only_in_their_backend() -> None:
    names = {"pytorch", "tensorflow", "torch", "keras"}
    backends = PACKAGE / "backends"
    outside = [
        f"{path.relative_to(PACKAGE)}:{line} {value!r}"
        for path in LIBRARY
        if backends not in path.parents
        for line, value in string_constants(path)
        if value in names
    ]
    assert outside == []


def test_importing_the_package_and_reading_metadata_loads_no_framework(demo) -> None:
    code = (
        "import sys, ig_airflow\n"
        "from ig_airflow import InputSpec, RunLayout\n"
        "from ig_airflow.artifacts import read_metadata\n"
        "import ig_airflow.core.attribution, ig_airflow.analysis.drift, ig_airflow.validation\n"
        f"meta = read_metadata({demo['artifact']!r})\n"
        "assert meta.framework == 'pytorch'\n"
        "loaded = sorted(m for m in ('torch', 'tensorflow', 'keras', 'ray', 'airflow') if m in sys.modules)\n"
        "print('loaded:', loaded)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "loaded: []" in result.stdout
