"""Optuna multi-objective wiring: what enters the study (and so the front) and what not.

The searcher is driven directly and through a real Ray Tune run with cheap function
trainables; the study lives in a real sqlite RDB storage.
"""

from __future__ import annotations

import math
import os

import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from kdprune.orchestration.config import SpaceConfig, SweepConfig
from kdprune.orchestration.search import (
    ParamsBudget,
    build_searcher,
    classify_result,
    fail_orphans,
    make_sampler,
)
from kdprune.orchestration.space import SearchSpace

optuna.logging.set_verbosity(optuna.logging.WARNING)
OBJ = ("wer_dev", "params")
FINAL = {"final": True, "stopped_early": False, "wer_dev": 0.2, "params": 5e4}


def searcher(tmp_path, **cfg_kw):
    cfg = SweepConfig(name="s", trials=8, **cfg_kw)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    return build_searcher(cfg, SearchSpace(SpaceConfig(), "tiny"), url, "study"), url


@pytest.mark.parametrize(
    ("result", "error", "state"),
    [
        (FINAL, False, "COMPLETE"),
        ({**FINAL, "stopped_early": True}, False, "PRUNED"),
        ({"step": 20, "wer_dev": 0.5, "expected_params": 6e4}, False, "FAIL"),  # no final
        ({"final": True, "failed": "boom"}, False, "FAIL"),
        ({**FINAL, "wer_dev": math.nan}, False, "FAIL"),
        ({**FINAL, "params": None}, False, "FAIL"),
        (FINAL, True, "FAIL"),
        (None, False, "FAIL"),
    ],
)
def test_classify_result(result, error, state):
    got, values = classify_result(result, error, OBJ)
    assert got == state
    assert (values is not None) == (state == "COMPLETE")


def test_only_final_results_enter_the_study(tmp_path):
    s, url = searcher(tmp_path)
    outcomes = {
        "a": (FINAL, False),
        "b": ({**FINAL, "wer_dev": 0.1, "params": 9e4}, False),
        "c": ({**FINAL, "stopped_early": True, "wer_dev": 0.01, "params": 1.0}, False),
        "d": ({"step": 10, "wer_dev": 0.0, "params": 0.0}, False),  # rung result only
        "e": (None, True),
    }
    for tid in outcomes:
        assert s.suggest(tid)["method"] in ("l0", "lrf")
    for tid, (result, error) in outcomes.items():
        s.on_trial_complete(tid, result=result, error=error)
    s.on_trial_complete("a", result={**FINAL, "wer_dev": 9.0})  # a repeat is ignored
    study = optuna.load_study(study_name="study", storage=url)
    states = [t.state for t in study.trials]
    assert states == [
        TrialState.COMPLETE,
        TrialState.COMPLETE,
        TrialState.PRUNED,
        TrialState.FAIL,
        TrialState.FAIL,
    ]
    front = {tuple(t.values) for t in study.best_trials}
    assert front == {(0.2, 5e4), (0.1, 9e4)}  # the stopped trial's tempting point is not there
    assert study.trials[0].user_attrs["params"] == 5e4
    assert study.trials[2].user_attrs["stopped_early"] is True


def test_plain_optuna_search_lets_stopped_trials_pollute_the_front(tmp_path):
    """The trap this layer avoids: Ray's OptunaSearch tells COMPLETE for any result."""
    plain = OptunaSearch(
        space=SearchSpace(SpaceConfig(), "tiny"),
        metric=list(OBJ),
        mode=["min", "min"],
        storage=optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'p.db'}"),
        study_name="plain",
    )
    plain.suggest("x")
    plain.on_trial_complete("x", result={**FINAL, "stopped_early": True, "params": 1.0})
    study = optuna.load_study(study_name="plain", storage=f"sqlite:///{tmp_path / 'p.db'}")
    assert study.trials[0].state == TrialState.COMPLETE  # partial values on the front


def test_params_budget_constraint(tmp_path):
    s, url = searcher(tmp_path, params_budget=6e4)
    for tid, params in (("a", 5e4), ("b", 9e4)):
        s.suggest(tid)
        s.on_trial_complete(tid, result={**FINAL, "params": params})
    s.suggest("c")
    s.on_trial_complete("c", result={"final": True, "stopped_early": True, "expected_params": 7e4})
    study = optuna.load_study(study_name="study", storage=url)
    cons = [t.constraints for t in study.trials]
    assert cons == [{"params_budget": -1e4}, {"params_budget": 3e4}, {"params_budget": 1e4}]
    assert [tuple(t.values) for t in study.best_trials] == [(0.2, 5e4)]  # b is infeasible
    assert ParamsBudget(1.0)({"params": "x"}) == 0.0


def test_samplers_are_seeded_and_selectable():
    a = make_sampler(SweepConfig(name="s", sampler="nsga2", seed=1, trials=30))
    assert isinstance(a, optuna.samplers.NSGAIISampler) and a._population_size == 10
    b = make_sampler(SweepConfig(name="s", sampler="tpe", params_budget=1.0))
    assert isinstance(b, optuna.samplers.TPESampler)


def test_initial_points_are_tried_first(tmp_path):
    pts = ({"method": "lrf", "rank_ratio": 0.3, "kd_weight": 0.0}, {"method": "l0"})
    s, _ = searcher(tmp_path, initial_points=pts)
    first, second = s.suggest("a"), s.suggest("b")
    assert first["method"] == "lrf" and first["rank_ratio"] == 0.3 and first["kd_weight"] == 0.0
    assert second["method"] == "l0" and "target_sparsity" in second


def test_fail_orphans(tmp_path):
    s, url = searcher(tmp_path)
    s.suggest("a")
    s.suggest("b")
    s.on_trial_complete("a", result=FINAL)
    assert fail_orphans(url, "study") == 1  # b was asked but its driver died
    study = optuna.load_study(study_name="study", storage=url)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL]


def _cheap_trial(config):
    """A real Tune function trainable shaped like `run_trial`'s results."""
    from ray import tune

    params = 1e5 * (1 - config.get("target_sparsity", 1 - config.get("rank_ratio", 1.0)))
    wer = 0.1 + 0.5 * (1 - params / 1e5) ** 2
    for step in (10, 20):
        tune.report({"step": step, "wer_dev": wer + 1.0 / step, "expected_params": params})
    if config["method"] == "lrf" and config["kd_weight"] == 0.0:
        raise RuntimeError("a failing trial")
    if config["kd_weight"] == 2.0:
        tune.report({"final": True, "stopped_early": True, "wer_dev": 0.0, "params": 0.0})
        return
    tune.report({"final": True, "stopped_early": False, "wer_dev": wer, "params": params})


@pytest.fixture(scope="module")
def ray_local():
    import sys

    import ray
    from ray import cloudpickle

    # Ship this module's trainable by value: Ray workers cannot import test modules.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_tune_multi_objective_run(tmp_path, ray_local, monkeypatch):
    """A Tune run with list objectives (no TuneConfig metric), early-stopped and failing
    trials: the study's COMPLETE trials are exactly the finished ones, with their values."""
    from ray import tune

    monkeypatch.setenv("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    pts = tuple({"method": m, "kd_weight": kd} for m in ("l0", "lrf") for kd in (0.0, 1.0, 2.0))
    s, url = searcher(tmp_path, initial_points=pts)
    tuner = tune.Tuner(
        _cheap_trial,
        tune_config=tune.TuneConfig(search_alg=s, num_samples=6, max_concurrent_trials=2),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), name="t", verbose=0),
    )
    grid = tuner.fit()
    assert len(grid) == 6
    study = optuna.load_study(study_name="study", storage=url)
    by_state = {st: [t for t in study.trials if t.state == st] for st in TrialState}
    assert len(by_state[TrialState.COMPLETE]) == 3  # l0 kd 0/1, lrf kd 1
    assert len(by_state[TrialState.PRUNED]) == 2  # kd 2
    assert len(by_state[TrialState.FAIL]) == 1  # lrf kd 0
    for t in by_state[TrialState.COMPLETE]:
        assert t.values[1] > 0 and t.values[0] < 1.0
    assert os.path.exists(tmp_path / "optuna.db")
