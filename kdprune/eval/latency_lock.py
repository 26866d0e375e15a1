"""A node-wide lock that makes a latency measurement exclusive on its machine.

Trials of a sweep share a node's cores; a latency timed while another trial trains
measures the contention (one LRF trial: 159 ms per audio second against ~11 alone).
`exclusive()` (the measurement) and `shared()` (each training step and rung evaluation
of `kdprune.train.loop.fit`) use two `flock` files in one folder per node and user:

- `shared()`: a short shared lock on ``intent`` (waits while a measurement is pending or
  running), then a shared lock on ``busy`` held for the step; ``intent`` is let go at once.
- `exclusive()`: an exclusive lock on ``intent`` (one measurement at a time per node; no
  new step starts), then an exclusive lock on ``busy`` (waits for the steps under way).

So a measurement waits at most one step (or one rung evaluation) of every trial on the
node, and the trainers pause at their next step boundary until it ends. The kernel drops a
process's locks when it dies, so a killed measurement never blocks training. Processes
that do not go through `fit` (another user's jobs) are not paused: the measurement also
takes the best of several runs (`kdprune.eval.latency.LatencyProtocol`).

The folder is ``$KDPRUNE_LOCK_DIR`` or ``<tmp>/kdprune-locks-<uid>``: the same for every
process of a user on a machine (Ray workers and a shell's `kdprune evaluate` alike).
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_DIR_ENV = "KDPRUNE_LOCK_DIR"
_files: dict[tuple[int, Path], int] = {}  # (pid, path) -> fd: a forked child opens its own


def lock_dir() -> Path:
    return Path(
        os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / f"kdprune-locks-{os.getuid()}"
    )


def _fd(name: str) -> int:
    path = lock_dir() / name
    key = (os.getpid(), path)
    if key not in _files:
        path.parent.mkdir(parents=True, exist_ok=True)
        _files[key] = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    return _files[key]


@contextmanager
def shared() -> Iterator[None]:
    """Around one unit of heavy work (a training step): paused while a measurement runs."""
    intent, busy = _fd("intent"), _fd("busy")
    fcntl.flock(intent, fcntl.LOCK_SH)
    try:
        fcntl.flock(busy, fcntl.LOCK_SH)
    finally:
        fcntl.flock(intent, fcntl.LOCK_UN)
    try:
        yield
    finally:
        fcntl.flock(busy, fcntl.LOCK_UN)


@contextmanager
def exclusive() -> Iterator[None]:
    """Around a latency measurement: alone among this node's measurements and steps."""
    intent, busy = _fd("intent"), _fd("busy")
    fcntl.flock(intent, fcntl.LOCK_EX)
    try:
        fcntl.flock(busy, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(busy, fcntl.LOCK_UN)
    finally:
        fcntl.flock(intent, fcntl.LOCK_UN)
