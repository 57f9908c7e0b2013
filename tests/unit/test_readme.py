"""The README's Python example runs as written, in a fresh folder."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def python_example() -> str:
    section = README.read_text().split("## Explain a model from Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_python_example_runs_as_written(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__main__"}
    exec(compile(python_example(), "README.md", "exec"), namespace)  # noqa: S102 - our own README
    attributions = namespace["attributions"]
    assert len(attributions) == 200 and attributions["completeness_error"].median() < 0.01
    assert attributions["converged"].mean() >= 0.9  # the rest barely move from the baseline (issue 18)
    assert (tmp_path / "artifacts" / "shapes" / "v1" / "examples.parquet").exists()
    assert "attr__color" in capsys.readouterr().out
