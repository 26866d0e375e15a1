"""Distributed sweeps: Ray Tune + Optuna over `kdprune.compress`, one Ray Train run per
trial, MLflow tracking and the Pareto front.

Data flow: `config` (SweepConfig, SpaceConfig) -> `space` (define-by-run Optuna space)
-> `search` (OptunaSearch that keeps early-stopped and failed trials off the front)
-> `tuner` (the one place a Tuner is built, started, resumed) -> `worker` (Tune trial =
one TorchTrainer; per-worker fn calls compress) -> `early_stop` (multi-objective rung
decisions) -> `tracking` (MLflow parent/children from the driver) -> `cli` (the flags of
``sweeps/*.py``). Names (params, metrics, tags) come from `kdprune.contract`. `run_sweep`
takes any trainer with compress's contract (tests/fakes.py has a seconds-fast one).
"""

from kdprune.orchestration.config import SpaceConfig, SweepConfig

__all__ = ["SpaceConfig", "SweepConfig", "run_sweep"]


def run_sweep(*args, **kwargs):
    """`kdprune.orchestration.tuner.run_sweep` (imported lazily: it pulls in Ray)."""
    from kdprune.orchestration.tuner import run_sweep as _run

    return _run(*args, **kwargs)
