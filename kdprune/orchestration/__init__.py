"""Distributed sweeps: Ray Tune + Optuna over `kdprune.compress`, one Ray Train run per
trial, MLflow tracking and the Pareto front.

Data flow: `config` (SweepConfig, SpaceConfig) -> `space` (define-by-run Optuna space)
-> `search` (OptunaSearch that keeps early-stopped and failed trials off the front)
-> `tuner` (the one place a Tuner is built, started, resumed) -> `worker` (Tune trial =
one TorchTrainer; per-worker fn calls compress) -> `early_stop` (multi-objective rung
decisions) -> `tracking` (MLflow parent/children from the driver) -> `cli` (the flags of
``sweeps/*.py``). Names (params, metrics, tags) come from `kdprune.contract`.
`tuner.run_sweep` takes any trainer with compress's contract (tests/fakes.py has a
seconds-fast one).
"""

from kdprune.orchestration.config import SpaceConfig, SweepConfig

# `run_sweep` is imported from `kdprune.orchestration.tuner`, not re-exported here: this
# package's __init__ stays as light as `config` (the analysis layer imports submodules of
# this package, and the tuner imports the analysis layer).
__all__ = ["SpaceConfig", "SweepConfig"]
