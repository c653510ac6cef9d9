"""What the benchmark scripts share (benchmarks/ is not a package: the scripts import this by name, their own
folder being on ``sys.path`` when run, and tests/test_benchmarks.py puts it there)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

#: ``--smoke`` on the CPU runs tiny ops on one thread: a second one only waits for it (10x slower on a busy machine)
SMOKE_THREADS = 1


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's CPU threads set to ``n`` for the block (``None``: left as they are), the caller's count given back
    after it: a caller in the same process (the smoke tests) keeps its settings."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
