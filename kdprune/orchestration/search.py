"""Optuna behind Ray Tune: samplers, the params constraint, and an `OptunaSearch` whose
trial completion is faithful for multi-objective sweeps.

Ray's `OptunaSearch.on_trial_complete` tells Optuna COMPLETE whenever a result exists,
so a trial stopped early (or one that ended without its final metrics) would enter the
study with partial values and pollute the Pareto front; with several objectives it even
tells COMPLETE with None values, which Optuna refuses, leaving the trial RUNNING forever.
`ParetoOptunaSearch` decides the state from the trial's own last result instead:

- ``final`` and every objective finite          -> COMPLETE with the objective values
- ``stopped_early`` (our multi-objective rungs)  -> PRUNED (never on a front)
- anything else (error, failed, no final result) -> FAIL
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ray.tune.search.optuna import OptunaSearch

from kdprune.contract import FINAL_METRICS
from kdprune.orchestration.config import SweepConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParamsBudget:
    """The sweep's constraint params <= budget, as Optuna's constraint value (feasible
    when <= 0). Optuna 5 replaced ``constraints_func`` by ``Trial.set_constraint``, which
    every sampler (NSGA-II, TPE) and ``study.best_trials`` honour; the value is set just
    before the trial is told. A pruned trial is judged on its last rung's expected params."""

    budget: float
    key: str = "params"

    def __call__(self, result: dict[str, Any]) -> float:
        value = result.get(self.key, result.get("expected_params"))
        try:
            value = float(value)
        except (TypeError, ValueError):
            return 0.0  # unknown size (failed trial): nothing to learn about the constraint
        return value - self.budget if math.isfinite(value) else 0.0


def make_sampler(cfg: SweepConfig):
    """NSGA-II (population-based, good for fronts) or TPE, seeded."""
    import optuna

    if cfg.sampler == "nsga2":
        pop = cfg.population_size or max(4, min(50, cfg.trials // 3))
        return optuna.samplers.NSGAIISampler(population_size=pop, seed=cfg.seed)
    return optuna.samplers.TPESampler(
        seed=cfg.seed, n_startup_trials=max(2, min(10, cfg.trials // 3)), multivariate=True
    )


def classify_result(
    result: dict[str, Any] | None, error: bool, objectives: Sequence[str]
) -> tuple[str, list[float] | None]:
    """Optuna state name and values for a finished Tune trial (see module docstring)."""
    if error or not result:
        return "FAIL", None
    if result.get("stopped_early"):
        return "PRUNED", None
    if not result.get("final") or result.get("failed"):
        return "FAIL", None
    values = []
    for name in objectives:
        v = result.get(name)
        try:
            v = float(v)
        except (TypeError, ValueError):
            return "FAIL", None
        if not math.isfinite(v):
            return "FAIL", None
        values.append(v)
    return "COMPLETE", values


class ParetoOptunaSearch(OptunaSearch):
    """`OptunaSearch` with the completion rule above and the optional params budget;
    intermediate results are ignored (early stopping is decided at rungs by `early_stop`,
    not by an Optuna pruner)."""

    def __init__(self, *args: Any, params_budget: float = 0.0, **kwargs: Any) -> None:
        self._budget = ParamsBudget(params_budget) if params_budget > 0 else None
        super().__init__(*args, **kwargs)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        return None

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        from optuna.trial import TrialState

        if trial_id in self._completed_trials:
            return
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None:
            return
        metrics = self._metric if isinstance(self._metric, list) else [self._metric]
        state, values = classify_result(result, error, metrics)
        try:
            # Final metrics (and a pruned trial's last expected size) as user attributes:
            # optuna-dashboard / `study.trials_dataframe()` show them, the constraint reads them.
            for key in (*FINAL_METRICS, "expected_params"):
                v = (result or {}).get(key)
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    ot_trial.set_user_attr(key, float(v))
            ot_trial.set_user_attr("ray_trial_id", trial_id)
            ot_trial.set_user_attr("stopped_early", bool((result or {}).get("stopped_early")))
            if state == "FAIL" and result and result.get("failed"):
                ot_trial.set_user_attr("fail_reason", str(result["failed"])[:500])
            if self._budget is not None and state != "FAIL":
                ot_trial.set_constraint("params_budget", self._budget(result or {}))
            tell_values = values if len(metrics) > 1 or values is None else values[0]
            self._ot_study.tell(ot_trial, tell_values, state=TrialState[state])
        except Exception as exc:  # e.g. told already by a previous driver before a restore
            logger.warning("optuna: could not tell trial %s (%s): %s", trial_id, state, exc)
        self._completed_trials.add(trial_id)


def build_searcher(cfg: SweepConfig, space: Any, storage_url: str, study_name: str):
    """The searcher of a sweep: study ``study_name`` in the RDB ``storage_url`` (a sqlite
    file in the sweep's state folder: `optuna-dashboard sqlite:///...` shows it)."""
    import optuna

    storage = optuna.storages.RDBStorage(storage_url)
    objectives = list(cfg.objectives)
    metric: Any = objectives if len(objectives) > 1 else objectives[0]
    mode: Any = ["min"] * len(objectives) if len(objectives) > 1 else "min"
    return ParetoOptunaSearch(
        space=space,
        metric=metric,
        mode=mode,
        sampler=make_sampler(cfg),
        study_name=study_name,
        storage=storage,
        points_to_evaluate=[dict(p) for p in cfg.initial_points] or None,
        params_budget=cfg.params_budget,
    )


def fail_orphans(storage_url: str, study_name: str) -> int:
    """Mark trials still RUNNING/WAITING in the study as FAIL; call when no Tune trial of
    the sweep is alive (a killed driver leaves asked-but-never-run trials behind)."""
    import optuna
    from optuna.trial import TrialState

    study = optuna.load_study(study_name=study_name, storage=storage_url)
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        study._storage.set_trial_user_attr(t._trial_id, "fail_reason", "orphaned: driver restart")
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        n += 1
    return n
