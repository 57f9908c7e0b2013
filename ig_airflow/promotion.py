"""Which model version is in production, and who decided so: a registry folder (local path or
fsspec URI) holding

- ``current.json``: the "current model" pointer (artifact URI, model version, checksum, when,
  by whom, why, the DAG run that decided), replaced atomically (write, then rename);
- ``decisions.json``: every decision, oldest first, never edited: a candidate promoted (approved
  by a person, or automatically because its drift raised no alert) or rejected (by whom, why,
  with the alerts it raised); also rewritten atomically.

A DAG run makes one decision: recording it again (a retried task) returns the first record and
changes nothing; a *different* decision for the same run is refused. Both files change under one
lock: the record first, then the pointer, which always names the latest promotion recorded (a
task that dies between the two writes is completed by its retry).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from ig_airflow.artifacts import read_metadata
from ig_airflow.exceptions import IGAirflowError
from ig_airflow.io import exclusive, exists, read_json, write_json

POINTER_FILE = "current.json"
DECISIONS_FILE = "decisions.json"
PROMOTED, REJECTED, INITIALISED = "promoted", "rejected", "initialised"
Approval = Literal["human", "automatic", "initial"]


class RegistryError(IGAirflowError):
    """The registry's pointer or decisions file is unreadable, or a run's decision conflicts."""


def pointer_uri(registry: str) -> str:
    return f"{str(registry).rstrip('/')}/{POINTER_FILE}"


def decisions_uri(registry: str) -> str:
    return f"{str(registry).rstrip('/')}/{DECISIONS_FILE}"


def _read(uri: str, kind: type, what: str) -> Any:
    """The JSON document at ``uri`` (None when absent); a clear error names the file otherwise."""
    if not exists(uri):
        return None
    try:
        value = read_json(uri)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RegistryError(f"{uri}: not a valid {what} (invalid JSON: {exc})") from None
    if not isinstance(value, kind):
        raise RegistryError(f"{uri}: not a valid {what} (a JSON {kind.__name__} is expected)")
    return value


def current_model(registry: str, verify: bool = False) -> dict[str, Any] | None:
    """The current model pointer, or None before the first promotion. ``verify``: also check
    that the artifact it names still has the recorded checksum (nobody replaced it since)."""
    uri = pointer_uri(registry)
    pointer = _read(uri, dict, "model pointer")
    if pointer is None:
        return None
    missing = [k for k in ("uri", "checksum") if not isinstance(pointer.get(k), str) or not pointer[k]]
    if missing:
        raise RegistryError(f"{uri}: not a valid model pointer (no {', '.join(missing)})")
    if verify:
        actual = read_metadata(pointer["uri"]).checksum()
        if actual != pointer["checksum"]:
            raise RegistryError(
                f"{uri}: the current model {pointer['uri']} has checksum {actual}, not the promoted "
                f"{pointer['checksum']}: the artifact was replaced after its promotion"
            )
    return pointer


def decisions(registry: str) -> list[dict[str, Any]]:
    """Every decision recorded in the registry, oldest first."""
    return _read(decisions_uri(registry), list, "decisions record") or []


def _model(uri: str) -> dict[str, str]:
    checksum = read_metadata(uri).checksum()
    return {"uri": str(uri), "model_version": checksum[:12], "checksum": checksum}


def _summary(pointer: dict[str, Any] | None) -> dict[str, Any] | None:
    return {k: pointer.get(k) for k in ("uri", "model_version", "checksum")} if pointer else None


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _record(
    registry: str,
    decision: str,
    candidate_uri: str,
    *,
    run_id: str,
    details: dict[str, Any],
) -> dict[str, Any] | None:
    """Append one decision for ``run_id``, unless the run already made it (returns that record),
    then point at the latest promotion. An initialisation is recorded only while the registry has
    no current model (else returns None)."""
    with exclusive(decisions_uri(registry)):
        recorded = decisions(registry)
        current = current_model(registry)
        if decision == INITIALISED and current is not None:
            return None
        earlier = [r for r in recorded if r.get("run_id") == run_id and r.get("decision") != INITIALISED]
        if decision != INITIALISED and earlier:
            record = _same_decision(registry, earlier[0], decision, run_id)
        else:
            record = {
                "run_id": run_id,
                "decision": decision,
                "candidate": _model(candidate_uri),
                "production": _summary(current),
                "decided_at": _now(),
                **details,
            }
            recorded = [*recorded, record]
            write_json(decisions_uri(registry), recorded)
        _point_at_latest(registry, recorded, current)
        return record


def _point_at_latest(registry: str, recorded: list[dict[str, Any]], current: dict[str, Any] | None) -> None:
    """Make the pointer name the latest promotion recorded (also completing one whose task died
    between writing the record and the pointer)."""
    promotions = [r for r in recorded if r.get("decision") in (PROMOTED, INITIALISED)]
    if not promotions:
        return
    latest = promotions[-1]
    pointer = {
        **latest["candidate"],
        **{k: latest.get(k) for k in ("run_id", "approval", "reason")},
        "promoted_at": latest.get("decided_at"),
        "promoted_by": latest.get("by"),
        "previous": latest.get("production"),
    }
    if pointer != current:
        write_json(pointer_uri(registry), pointer)


def _same_decision(registry: str, earlier: dict[str, Any], decision: str, run_id: str) -> dict[str, Any]:
    if earlier.get("decision") != decision:
        raise RegistryError(
            f"{decisions_uri(registry)}: run {run_id!r} already {earlier.get('decision')} candidate "
            f"{(earlier.get('candidate') or {}).get('uri')} (by {earlier.get('by')!r} at "
            f"{earlier.get('decided_at')}); a run makes one decision: start a new run to decide again"
        )
    return earlier


def _details(
    by: str, reason: str, alerts: Iterable[str], approval: str, drift: Mapping[str, Any] | None
) -> dict[str, Any]:
    if not by:
        raise RegistryError("a decision names who made it (by)")
    return {
        "approval": approval,
        "by": str(by),
        "reason": str(reason or ""),
        "alerts": [str(a) for a in alerts],
        "drift": dict(drift) if drift else None,
    }


def promote(
    registry: str,
    candidate_uri: str,
    by: str,
    reason: str = "",
    alerts: Iterable[str] = (),
    *,
    run_id: str,
    approval: Approval = "human",
    drift: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Make ``candidate_uri`` the current model and record the decision of ``run_id``:
    ``approval`` "human" (approved ``by`` a person) or "automatic" (no drift alert). ``drift``:
    what the decision saw (NDCG@k, report). Returns the run's decision record."""
    details = _details(by, reason, alerts, approval, drift)
    return _record(registry, PROMOTED, candidate_uri, run_id=run_id, details=details)


def reject(
    registry: str,
    candidate_uri: str,
    by: str,
    reason: str = "",
    alerts: Iterable[str] = (),
    *,
    run_id: str,
    drift: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Record that ``by`` rejected ``candidate_uri`` in ``run_id`` (why, and the alerts it
    raised); the current model stays. Returns the run's decision record."""
    details = _details(by, reason, alerts, "human", drift)
    return _record(registry, REJECTED, candidate_uri, run_id=run_id, details=details)


def apply_decision(
    registry: str, candidate_uri: str, decision: Mapping[str, Any], *, run_id: str
) -> dict[str, Any]:
    """Record an approval gate's ``decision`` (the XCom of
    :class:`~ig_airflow.operators.approval.ModelApprovalOperator`: ``option`` Approve or Reject,
    ``automatic``, ``by``, ``reason``, ``alerts``, ``ndcg_at_k``, ``report``): promote the
    candidate or keep the current model. Returns the run's decision record."""
    drift = {k: decision.get(k) for k in ("ndcg_at_k", "report")}
    args = (
        registry,
        candidate_uri,
        decision["by"],
        decision.get("reason") or "",
        decision.get("alerts") or (),
    )
    if decision["option"] == "Approve":
        approval: Approval = "automatic" if decision.get("automatic") else "human"
        return promote(*args, run_id=run_id, approval=approval, drift=drift)
    return reject(*args, run_id=run_id, drift=drift)


def initialise(registry: str, model_uri: str, by: str, reason: str, *, run_id: str) -> dict[str, Any]:
    """Point a registry with no current model at ``model_uri`` (its first production model) and
    record it; a registry that has one is left as it is. Returns the current pointer."""
    details = _details(by, reason, (), "initial", None)
    _record(registry, INITIALISED, model_uri, run_id=run_id, details=details)
    return current_model(registry)  # type: ignore[return-value]
