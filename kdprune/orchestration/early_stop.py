"""Multi-objective early stopping at rungs (stopping-type MOASHA, after Syne Tune).

A *rung* is an evaluation step (the ``step`` of a report). When a trial reaches a rung it
records its point (wer_dev, expected_params) there and is ranked with the ``n`` other
trials already recorded at that rung by non-dominated sorting (front 0 = non-dominated,
front 1 = non-dominated once front 0 is removed, ...). It is stopped when at least
``ceil((n + 1) / eta)`` peers lie on strictly better fronts -- it is then dominated by
points of every better front and outside the best 1/eta of the rung -- once
``n >= min_peers``. A point non-dominated at its rung always continues, so when rung
values order trials as their final values do, no point of the final front is cut.

The records live in one Ray actor per sweep (`RungStore`), named so every trial's rank-0
worker can reach it, persisted to a JSON file in the sweep's state folder so a resumed
driver continues with them. Decisions are memoised per (trial, rung): a trial that
resumes from a checkpoint and reports a rung again gets the same answer.

A stopped trial ends itself cleanly with ``stopped_early=True`` in its last result, so
Optuna records it as PRUNED and MLflow tags it ``kdprune.stopped_early=true``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdprune.contract import BUDGET_PARAMS, RUNG_OBJECTIVES
from kdprune.utils import atomic_write_text


class StopTrial(Exception):
    """Raised inside a trial's report callback to end the trial at a rung."""


@dataclass(frozen=True)
class StoppingRule:
    eta: float = 2.0
    min_peers: int = 2
    objectives: tuple[str, ...] = RUNG_OBJECTIVES


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """True when ``a`` is no worse than ``b`` everywhere and better somewhere (minimised)."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(
        x < y for x, y in zip(a, b, strict=True)
    )


def front_levels(points: Sequence[Sequence[float]]) -> list[int]:
    """Non-dominated sorting: the front index of each point (0 = non-dominated)."""
    level = [-1] * len(points)
    remaining = set(range(len(points)))
    k = 0
    while remaining:
        front = {
            i
            for i in remaining
            if not any(dominates(points[j], points[i]) for j in remaining if j != i)
        }
        for i in front:
            level[i] = k
        remaining -= front
        k += 1
    return level


def should_stop(
    point: Sequence[float], peers: Sequence[Sequence[float]], rule: StoppingRule
) -> bool:
    """The rung decision for ``point`` given the other trials' points at the same rung."""
    n = len(peers)
    if n < rule.min_peers or any(not math.isfinite(v) for v in point):
        return False
    levels = front_levels([*peers, point])
    better = sum(lv < levels[-1] for lv in levels[:-1])
    return better >= math.ceil((n + 1) / rule.eta)


class RungRecords:
    """Rung points and memoised decisions, with JSON persistence (no Ray needed)."""

    def __init__(self, rule: StoppingRule, path: str | None = None) -> None:
        self.rule = rule
        self.path = Path(path) if path else None
        self.points: dict[str, dict[str, list[float]]] = {}  # rung -> trial -> point
        self.decisions: dict[str, dict[str, bool]] = {}  # rung -> trial -> stop?
        if self.path is not None and self.path.exists():
            data = json.loads(self.path.read_text())
            self.points = data.get("points", {})
            self.decisions = data.get("decisions", {})

    def decide(self, trial_id: str, rung: int | float, point: Sequence[float]) -> bool:
        key = str(int(rung)) if float(rung).is_integer() else str(rung)
        done = self.decisions.get(key, {})
        if trial_id in done:
            return done[trial_id]
        peers = [p for t, p in self.points.get(key, {}).items() if t != trial_id]
        stop = should_stop(point, peers, self.rule)
        self.points.setdefault(key, {})[trial_id] = [float(v) for v in point]
        self.decisions.setdefault(key, {})[trial_id] = stop
        self._save()
        return stop

    def stopped(self) -> dict[str, int]:
        """Trials stopped so far -> the rung that stopped them."""
        out: dict[str, int] = {}
        for rung, dec in self.decisions.items():
            for t, stop in dec.items():
                if stop:
                    out[t] = min(out.get(t, 10**12), int(float(rung)))
        return out

    def snapshot(self) -> dict[str, Any]:
        return {"points": self.points, "decisions": self.decisions}

    def _save(self) -> None:
        if self.path is None:
            return
        atomic_write_text(self.path, json.dumps(self.snapshot(), sort_keys=True))


def store_name(run_name: str) -> str:
    return f"kdprune-rungs-{run_name}"


def start_store(run_name: str, rule: StoppingRule, path: Path):
    """Create (or reattach to) the sweep's `RungStore` actor on the driver's node, so its
    file lands in the driver's state folder."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    actor = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(RungRecords)
    return actor.options(
        name=store_name(run_name),
        namespace=ray.get_runtime_context().namespace,
        get_if_exists=True,
        scheduling_strategy=NodeAffinitySchedulingStrategy(
            ray.get_runtime_context().get_node_id(), soft=False
        ),
    ).remote(rule, str(path))


def rung_point(metrics: dict[str, Any], rule: StoppingRule) -> list[float] | None:
    """The rung objectives of a report, or None when one is missing.

    The size coordinate is the size the trial is committed to: an l0 trial reports
    ``budget_params`` (its target) because its expected size is still shrinking while the
    target warms up; comparing that against LRF trials' final sizes would stop every l0
    trial at the first rungs (seen on the demo sweep)."""
    try:
        return [
            float(
                metrics[BUDGET_PARAMS]
                if k == "expected_params" and BUDGET_PARAMS in metrics
                else metrics[k]
            )
            for k in rule.objectives
        ]
    except (KeyError, TypeError, ValueError):
        return None
