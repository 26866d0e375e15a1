"""Multi-objective early stopping: rung decisions, memoisation, persistence, and on a
simulated sweep: trial time saved without losing a Pareto point."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kdprune.analysis.pareto import pareto_mask
from kdprune.orchestration.early_stop import (
    RungRecords,
    StoppingRule,
    dominates,
    front_levels,
    rung_point,
    should_stop,
)
from kdprune.orchestration.synthetic import final_point, rung_values


def test_dominates_is_strict():
    assert dominates((0.1, 10), (0.2, 10))
    assert not dominates((0.1, 10), (0.1, 10))  # equal points do not dominate
    assert not dominates((0.1, 20), (0.2, 10))  # a trade-off


def test_front_levels():
    pts = [(0.1, 10.0), (0.2, 5.0), (0.3, 20.0), (0.4, 30.0), (0.05, 40.0)]
    assert front_levels(pts) == [0, 0, 1, 2, 0]


def test_decision_needs_peers_and_a_bad_rank():
    rule = StoppingRule(eta=2.0, min_peers=2)
    x = (0.5, 50.0)
    assert not should_stop(x, [(0.1, 10.0)], rule)  # one peer: too early to judge
    # 2 peers on a better front: outside the best ceil(3/2) = 2 of 3
    assert should_stop(x, [(0.1, 10.0), (0.9, 5.0)], rule)
    assert not should_stop(x, [(0.1, 10.0), (0.9, 90.0)], rule)  # only 1 better
    assert not should_stop(x, [(0.1, 90.0), (0.9, 10.0)], rule)  # x is on the front
    four = [(0.1, 10.0), (0.9, 90.0), (0.95, 95.0), (0.2, 8.0)]
    assert not should_stop(x, four, rule)  # 2 better of 5: within the best 3
    assert should_stop(x, four, StoppingRule(eta=4.0, min_peers=2))  # more aggressive
    assert not should_stop((float("nan"), 1.0), four, rule)


def test_decisions_are_memoised_and_persisted(tmp_path):
    path = tmp_path / "rungs.json"
    rec = RungRecords(StoppingRule(min_peers=1), str(path))
    assert not rec.decide("a", 10, (0.1, 10.0))
    assert rec.decide("b", 10, (0.5, 50.0))
    # b resumes from a checkpoint and reports rung 10 again, with different numbers:
    assert rec.decide("b", 10, (0.0, 1.0)) is True
    assert rec.points["10"]["b"] == [0.5, 50.0]
    again = RungRecords(StoppingRule(min_peers=1), str(path))  # a resumed driver
    assert again.decide("b", 10, (0.0, 1.0)) is True
    assert again.stopped() == {"b": 10}
    assert json.loads(path.read_text())["decisions"]["10"] == {"a": False, "b": True}


def test_rung_point_needs_both_objectives():
    rule = StoppingRule()
    assert rung_point({"wer_dev": 0.3, "expected_params": 5e4, "x": 1}, rule) == [0.3, 5e4]
    assert rung_point({"wer_dev": 0.3}, rule) is None


def simulate(configs, steps: int, rule: StoppingRule | None, every: int = 10):
    """Trials one after another (as on a 2-core machine); returns (steps run, finals)."""
    rec = RungRecords(rule) if rule else None
    used, finals = 0, {}
    for tid, (method, kd, s, r) in enumerate(configs):
        wer_f, enc_f = final_point(method, kd, s, r, seed=0)
        for step in range(every, steps + 1, every):
            used += every
            wer, enc = rung_values(wer_f, enc_f, step, steps)
            if rec is not None and rec.decide(str(tid), step, (wer, enc)):
                break
        else:
            finals[tid] = (wer_f, float(enc_f))
    return used, finals


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stopping_saves_time_and_keeps_the_front(seed):
    rng = np.random.default_rng(seed)
    configs = []
    for _ in range(24):
        method = str(rng.choice(["l0", "lrf"]))
        configs.append(
            (method, float(rng.choice([0.0, 1.0])), rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.8))
        )
    full_steps, full = simulate(configs, 60, None)
    es_steps, kept = simulate(configs, 60, StoppingRule(eta=2.0, min_peers=2))
    ids = sorted(full)
    front_all = {ids[i] for i in np.flatnonzero(pareto_mask(np.array([full[i] for i in ids])))}
    kept_ids = sorted(kept)
    front_kept = {
        kept_ids[i] for i in np.flatnonzero(pareto_mask(np.array([kept[i] for i in kept_ids])))
    }
    assert front_kept == front_all  # no Pareto point lost
    assert es_steps < 0.85 * full_steps  # and real time saved


def test_rung_size_is_the_committed_budget_when_reported():
    """An l0 trial's size coordinate at a rung is its target, not its shrinking expectation."""
    rule = StoppingRule()
    assert rung_point({"wer_dev": 0.3, "expected_params": 9e4, "budget_params": 5e4}, rule) == [
        0.3,
        5e4,
    ]
