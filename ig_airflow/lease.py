"""One writer per run folder: a lease file naming its holder, refused to others while held,
taken over once it expires (or, on the same host, once its holder's process is gone).

The lease lives at ``RunLayout.lease`` (a small JSON file, locked while it is read and
rewritten, and never removed). A process takes it once and may take it again (the pipeline
holds it around validation and IG); it is renewed as work advances and released at the end,
also on failure. Two Airflow runs, or a CLI run beside an Airflow task, that point at the
same ``output.uri`` therefore never mix their shards: the second one fails at once, naming the
holder and when its lease expires.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

from ig_airflow.exceptions import IGAirflowError
from ig_airflow.io import locked_json
from ig_airflow.layout import RunLayout

LEASE_SECONDS = 600.0  # renewed at least every third of this while the holder works
HOLDER = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class RunFolderBusy(IGAirflowError):
    """Another process holds the run folder's lease."""


class RunLease:
    """The lease on one run folder, held by this process (see the module docstring)."""

    def __init__(self, layout: RunLayout, seconds: float = LEASE_SECONDS):
        self.uri, self.root, self.seconds = layout.lease, layout.root, seconds
        self.renewed = 0.0

    def acquire(self) -> None:
        with locked_json(self.uri) as (current, replace):
            if current and current.get("holder") not in (None, HOLDER) and _still_held(current):
                expires = dt.datetime.fromtimestamp(current["expires_at"], dt.UTC).isoformat(
                    timespec="seconds"
                )
                raise RunFolderBusy(
                    f"{self.root} is being written by {current['holder']} (lease until {expires}); "
                    "give each run its own output.uri, or wait for that run to end"
                )
            replace(self._held())

    def renew(self) -> None:
        """Extend the lease when a third of it has passed."""
        if time.time() - self.renewed > self.seconds / 3:
            with locked_json(self.uri) as (_, replace):
                replace(self._held())

    def release(self) -> None:
        with locked_json(self.uri) as (current, replace):
            if current and current.get("holder") == HOLDER:
                replace({"holder": None, "released_by": HOLDER, "released_at": time.time()})

    def _held(self) -> dict[str, Any]:
        self.renewed = time.time()
        return {
            "holder": HOLDER,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "expires_at": self.renewed + self.seconds,
        }


def _still_held(lease: dict[str, Any]) -> bool:
    """Unexpired, and on this host only while the holder's process lives."""
    if lease.get("expires_at", 0) < time.time():
        return False
    if lease.get("host") == socket.gethostname() and isinstance(lease.get("pid"), int):
        try:
            os.kill(lease["pid"], 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    return True


_held: dict[str, tuple[RunLease, int]] = {}


@contextlib.contextmanager
def run_lease(layout: RunLayout) -> Iterator[RunLease]:
    """Hold the lease of ``layout``'s folder for the block (re-entrant within a process)."""
    lease, depth = _held.get(layout.lease, (RunLease(layout), 0))
    if depth == 0:
        lease.acquire()
    _held[layout.lease] = (lease, depth + 1)
    try:
        yield lease
    finally:
        lease, depth = _held[layout.lease]
        if depth == 1:
            del _held[layout.lease]
            lease.release()
        else:
            _held[layout.lease] = (lease, depth - 1)
