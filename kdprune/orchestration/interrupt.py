"""Stopping a sweep on purpose: SIGINT (Ctrl-C) and SIGTERM (`ray job stop`, a batch
scheduler, a spot instance's notice) while `run_sweep` runs.

Ray Tune already ends a run gracefully on a stop signal: `Tuner.fit` leaves its loop,
saves the experiment state one last time (the interrupted trials stay unfinished in it, so
`Tuner.restore` reruns them) and stops the trials' actors. `StopSignals` builds on that
rather than beside it: it takes SIGINT and SIGTERM for the sweep's driver, and on the first
one calls Tune's own stop handler (Tune registers it on SIGUSR1 in every `fit`; its SIGINT
registration is turned off with ``TUNE_DISABLE_SIGINT_HANDLER`` so that SIGTERM gets the
same treatment) and runs ``on_stop`` in a thread at once (the MLflow bookkeeping: done
before a `ray job stop`'s SIGKILL, 3 s later by default, can land). A second signal, or
one outside `fit`, raises KeyboardInterrupt: the driver stops at once.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from kdprune.utils import log

# A process ended by a signal exits 128 + its number, as a shell reports it.
EXIT_CODES = {"SIGINT": 128 + signal.SIGINT, "SIGTERM": 128 + signal.SIGTERM}
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
TUNE_SIGNAL = signal.SIGUSR1  # where `Tuner.fit` always registers its stop handler (POSIX)


def _no_restore_hint(record: logging.LogRecord) -> bool:
    return "Tuner.restore" not in record.getMessage()


class StopSignals:
    """Context manager owning SIGINT and SIGTERM for a sweep driver's main thread.

    ``signal`` is the name of the first stop signal received ("" while none came).
    ``on_stop()`` runs once, in a thread, as soon as the first one arrives."""

    def __init__(self, on_stop: Callable[[], None]) -> None:
        self.signal = ""
        self._on_stop = on_stop
        self._in_fit = False
        self._saved: dict[int, object] = {}
        self._thread: threading.Thread | None = None

    def __enter__(self) -> StopSignals:
        # Tune's own hint ("Resume experiment with: Tuner.restore(...)") is not how a
        # kdprune sweep resumes; `on_stop` prints the command that does.
        logging.getLogger("ray.tune.tune").addFilter(_no_restore_hint)
        if threading.current_thread() is threading.main_thread():
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # ours forwards to Tune's
            self._saved = {s: signal.getsignal(s) for s in (*STOP_SIGNALS, TUNE_SIGNAL)}
            self.reclaim()
            signal.signal(TUNE_SIGNAL, signal.SIG_DFL)  # no earlier fit's handler left
        return self

    def reclaim(self) -> None:
        """(Re)installs the handlers: call it once Ray is connected too, whose core worker
        puts its own SIGTERM handler (a stack dump, then death) over ours."""
        if self._saved:
            for s in STOP_SIGNALS:
                signal.signal(s, self._handle)

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._saved.items():
            signal.signal(s, handler)

    @contextmanager
    def tune_running(self) -> Iterator[None]:
        """Marks `Tuner.fit`: a first stop signal inside asks Tune to end gracefully."""
        self._in_fit = True
        try:
            yield
        finally:
            self._in_fit = False

    def interrupted(self, name: str = "SIGINT") -> None:
        """Records a stop that came as KeyboardInterrupt (not through `_handle`)."""
        if not self.signal:
            self.signal = name
            self._start_on_stop()

    def finish_on_stop(self, timeout_s: float = 30.0) -> None:
        """Waits for ``on_stop`` (started by the signal) to end."""
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.signal:  # the second: stop now, the bookkeeping is already under way
            log(f"{name} again: stopping at once")
            raise KeyboardInterrupt
        self.signal = name
        tune_stop = signal.getsignal(TUNE_SIGNAL)
        graceful = self._in_fit and callable(tune_stop)
        log(
            f"{name}: stopping the sweep"
            + (
                ", letting Ray Tune save its state (send it again to stop at once)"
                if graceful
                else ""
            )
        )
        self._start_on_stop()
        if not graceful:
            raise KeyboardInterrupt
        tune_stop(signum, frame)  # sets Tune's stop event; Tune puts our SIGINT handler back

    def _start_on_stop(self) -> None:
        self._thread = threading.Thread(target=self._on_stop, name="sweep-stop", daemon=True)
        self._thread.start()


def resume_command(command: Sequence[str], run_name: str) -> str:
    """The shell command that resumes ``run_name``: ``command`` (a script and its flags)
    without its own ``--resume [RUN]``, plus ``--resume run_name``."""
    args, rest = [], list(command)
    while rest:
        arg = rest.pop(0)
        if arg == "--resume":
            if rest and not rest[0].startswith("-"):
                rest.pop(0)
        elif not arg.startswith("--resume="):
            args.append(arg)
    if not args:
        return f"run_sweep(cfg, resume={run_name!r})"
    return shlex.join([*args, "--resume", run_name])
