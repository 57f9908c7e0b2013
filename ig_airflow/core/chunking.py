"""How many interpolated rows go through one forward+backward, and the loop over them.

Both frameworks size their chunks from ``ig.memory_budget_mb`` the same way: the memory one
interpolated row needs (measured by the backend on a probe forward) into the budget, divided
by :data:`ALLOCATOR_SLACK`. On CPU, glibc keeps the freed chunks of one forward+backward in its
heap (its mmap threshold rises after the first large free), so the process's RSS peaks near
twice the live tensors; with the slack, RSS and not only live tensors stays within the budget
(``benchmarks/bench_ig_engine.py`` measures both).
"""

from __future__ import annotations

from collections.abc import Iterator

ALLOCATOR_SLACK = 2.0
MAX_CHUNK_ROWS = 1 << 17


def rows_within_budget(memory_budget_mb: float, bytes_per_interpolated_row: int) -> int:
    """Interpolated rows per forward+backward that fit ``memory_budget_mb``."""
    budget = memory_budget_mb * 2**20 / ALLOCATOR_SLACK
    return int(max(1, min(MAX_CHUNK_ROWS, budget // max(bytes_per_interpolated_row, 1))))


def row_chunks(n_rows: int, n_steps: int, interpolated_rows: int) -> Iterator[slice]:
    """Slices of input rows whose ``n_steps`` path points each fit ``interpolated_rows``."""
    rows_per_chunk = max(1, interpolated_rows // n_steps)
    for start in range(0, n_rows, rows_per_chunk):
        yield slice(start, min(start + rows_per_chunk, n_rows))
