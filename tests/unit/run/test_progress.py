"""Progress of a stage: a bar on a terminal, log lines elsewhere (Airflow task logs, pipes)."""

from __future__ import annotations

import io
import logging

from ig_airflow.run.manifest import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_one_bar_redrawn_in_place(monkeypatch) -> None:
    monkeypatch.delenv("IG_AIRFLOW_PROGRESS", raising=False)
    screen = Terminal()
    progress = Progress(100, "explained {done} rows", stream=screen)
    progress.advance(40)
    progress.advance(60)
    frames = screen.getvalue().split("\r")[1:]
    assert frames[0].startswith("[############------------------]  40% 40/100 rows")
    assert frames[1].startswith("[##############################] 100% 100/100 rows") and frames[1].endswith(
        "\n"
    )


def test_pipes_and_forced_logs_get_log_lines(monkeypatch, caplog) -> None:
    caplog.set_level(logging.INFO, logger="ig_airflow.run.manifest")
    piped = io.StringIO()
    Progress(10, "explained {done} rows", stream=piped).advance(5)
    monkeypatch.setenv("IG_AIRFLOW_PROGRESS", "log")
    Progress(10, "explained {done} rows", stream=Terminal()).advance(10)
    assert piped.getvalue() == ""
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        "explained 5/10 rows",
        "explained 10/10 rows",
    ]
