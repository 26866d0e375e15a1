"""Where a trial trains, and what it reserves (`kdprune.orchestration.worker`).

A 1-worker trial trains in its Tune function and reserves the worker's CPUs and GPU there;
a trial of 2+ workers, or any trial when ``KDPRUNE_TRIAL_WORKER_GROUP=1`` is set on the
driver, keeps a Ray Train worker group and its Tune function reserves ``driver_cpus``.
The choice is made when the plan is built (on the driver) and travels with it.
(The in-process path itself runs in the sweep tests: tests/test_sweep_e2e.py,
bench/orchestration.py ``trial_overhead``.)
"""

from __future__ import annotations

import pickle

from kdprune.orchestration.worker import WORKER_GROUP_ENV, TrialPlan, trial_resources


def plan(**kw) -> TrialPlan:
    return TrialPlan(run_name="r", workdir="/w", storage="/s", teacher_dir="", trainer=print, **kw)


def test_one_worker_trains_in_its_tune_function(monkeypatch):
    monkeypatch.delenv(WORKER_GROUP_ENV, raising=False)
    p = plan(cpus_per_worker=2.0)
    assert p.in_process
    assert trial_resources(p, 1.0) == {"cpu": 2.0}
    gpu = plan(use_gpu=True, gpus_per_worker=1.0)
    assert trial_resources(gpu, 1.0) == {"cpu": 1.0, "gpu": 1.0}


def test_two_workers_keep_their_worker_group(monkeypatch):
    monkeypatch.delenv(WORKER_GROUP_ENV, raising=False)
    p = plan(num_workers=2, use_gpu=True)
    assert not p.in_process
    assert trial_resources(p, 1.0) == {"cpu": 1.0}


def test_the_driver_can_ask_for_a_worker_group(monkeypatch):
    monkeypatch.setenv(WORKER_GROUP_ENV, "1")
    p = plan()
    monkeypatch.delenv(WORKER_GROUP_ENV)  # a trial's process need not have it: decided here
    assert not pickle.loads(pickle.dumps(p)).in_process
    assert trial_resources(p, 0.5) == {"cpu": 0.5}
