"""Compare a run's outputs byte for byte (re-runs must give the same result)."""

from __future__ import annotations

from pathlib import Path


def dataset_bytes(folder: str | Path) -> dict[str, bytes]:
    """Every data file of a Parquet dataset folder (or one file), by name, with its bytes."""
    folder = Path(folder)
    if folder.is_file():
        return {folder.name: folder.read_bytes()}
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.parquet"))}
