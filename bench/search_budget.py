"""Equal-compute trials for the search benchmark P5 (bench/search.py): what one trial costs
in CPU time, the product's multi-objective early stopping applied in-process, and a cost
ledger so that a cached run is charged what it cost when it was trained.

A trial is one real `kdprune.compress.compress` run in this process. Its cost is the
process CPU time it used: ``getrusage`` of this process plus its reaped children (the
training loop's DataLoader worker), user + system, so a core shared with other work does
not inflate it. With early stopping, the trial's `TrainerContext.report` is the sweep's
rung rule run locally: the rung point by `early_stop.rung_point`, the decision by
`early_stop.RungRecords` (the same records the sweep's `RungStore` actor keeps), and a
stop ends the run by `StopTrial` as it does on a Ray Train worker. A stopped trial costs
its CPU time up to that rung.

The ledger (``ledger.json`` beside the run folders) keeps, per config hash
(`compress.run_key`), the final result (none for a stopped run), the CPU cost and, per
rung, the rung point and the CPU time spent up to it. A config met again (the two arms share their seeded
random start-up trials) is not retrained: it is replayed from the ledger, rung by rung
through the same stopping records, and charged exactly what it cost (the full cost, or
the cost up to the rung that stops it). Partial runs are never resumed: a run folder not
in the ledger is deleted before training, so no arm inherits another's checkpoints.
"""

from __future__ import annotations

import json
import math
import resource
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdprune.orchestration.early_stop import RungRecords, StoppingRule, StopTrial, rung_point
from kdprune.utils import atomic_write_text


def cpu_seconds() -> float:
    """User + system CPU time of this process and its reaped children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class Ledger:
    """Runs by config hash: ``{"result", "cpu_s", "rungs": [[step, point|None,
    cpu_s_at_rung], ...]}`` (``result`` None: stopped at its last rung), persisted to
    ``path`` after each new entry."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.entries: dict[str, dict[str, Any]] = (
            json.loads(self.path.read_text()) if self.path.exists() else {}
        )

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def put(self, key: str, result: dict[str, Any] | None, cpu_s: float, rungs: list) -> None:
        self.entries[key] = {"result": result, "cpu_s": cpu_s, "rungs": rungs}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(self.entries, sort_keys=True))


@dataclass
class TrialCost:
    """What one trial produced and cost."""

    result: dict[str, Any]  # compress's result, or {"failed": reason}, or {} when stopped
    cpu_s: float  # CPU seconds charged
    error: bool = False
    stopped_at: int | None = None  # the rung step that stopped it
    cached: bool = False  # replayed from the ledger
    rungs: list = field(default_factory=list)  # [step, point, cpu_s up to the rung]

    def tune_result(self) -> dict[str, Any]:
        """The trial's last result as the sweep's searcher sees it (`classify_result`)."""
        if self.stopped_at is not None:
            return {"final": True, "stopped_early": True}
        return {**self.result, "final": True}


def replay(entry: dict[str, Any], trial_id: str, records: RungRecords | None) -> TrialCost | None:
    """A ledger entry as a new trial: its rungs go through ``records`` (None: no early
    stopping) in order; the first stop ends it at the CPU cost up to that rung. None when
    the entry is a stopped run (no result) that this time is not stopped: train it."""
    rungs = [list(r) for r in entry["rungs"]]
    for step, point, cpu_at in rungs:
        if records is not None and point is not None and records.decide(trial_id, step, point):
            return TrialCost({}, float(cpu_at), stopped_at=int(step), cached=True, rungs=rungs)
    if entry["result"] is None:
        return None
    return TrialCost(dict(entry["result"]), float(entry["cpu_s"]), cached=True, rungs=rungs)


def run_budgeted_trial(
    cfg: Any,
    key: str,
    trial_id: str,
    *,
    workdir: Path,
    runs_dir: Path,
    teacher_dir: str,
    ledger: Ledger,
    records: RungRecords | None,
    rule: StoppingRule,
) -> TrialCost:
    """One trial of ``cfg`` (config hash ``key``): replayed from the ledger, or trained in
    ``runs_dir/key`` from scratch with the rung rule applied when ``records`` is given."""
    from kdprune.compress import TrainerContext, compress
    from kdprune.utils import log

    entry = ledger.get(key)
    again = replay(entry, trial_id, records) if entry is not None else None
    if again is not None:
        return again
    out = runs_dir / key
    shutil.rmtree(out, ignore_errors=True)  # never resume a partial run (free compute)
    rungs: list = []
    c0 = cpu_seconds()

    def report(metrics: dict[str, Any], _ckpt: Path | None) -> None:
        point = rung_point(metrics, rule)
        step = int(metrics["step"])
        ok = point is not None and all(math.isfinite(v) for v in point)
        rungs.append([step, point if ok else None, round(cpu_seconds() - c0, 3)])
        if records is not None and ok and records.decide(trial_id, step, point):
            raise StopTrial(f"dominated at step {step}")

    ctx = TrainerContext(device="cpu", report=report)
    try:
        result = compress(cfg, workdir, out, teacher_dir, ctx)
    except StopTrial:
        shutil.rmtree(out, ignore_errors=True)
        cost = cpu_seconds() - c0
        if entry is None:  # a stopped run: its rungs, replayed if met again
            ledger.put(key, None, round(cost, 3), rungs)
        return TrialCost({}, cost, stopped_at=rungs[-1][0], rungs=rungs)
    except Exception as exc:  # a failed trial counts towards the budget, adds nothing
        log(f"trial {trial_id} failed: {exc!r}")
        return TrialCost({"failed": repr(exc)[:500]}, cpu_seconds() - c0, error=True, rungs=rungs)
    cost = cpu_seconds() - c0
    ledger.put(key, result, round(cost, 3), rungs)
    return TrialCost(result, cost, rungs=rungs)
