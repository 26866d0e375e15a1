"""Sweep configuration: what is searched, how trials run, where results go.

A sweep is one Ray Tune run over `kdprune.compress`; `SweepConfig` holds everything that
defines it and round-trips through JSON (`sweep.json` in the sweep's state folder), so a
killed driver can be resumed with exactly the same settings.
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from kdprune.contract import (
    COMPRESSING_METHODS,
    DEFAULT_OBJECTIVES,
    METHODS,
    OBJECTIVE_ALIASES,
    OBJECTIVES,
    SCHEDULES,
    manifest_selection,
)
from kdprune.data.selection import check_data
from kdprune.utils import default_workdir

SAMPLERS = ("nsga2", "tpe")


def parse_objectives(text: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``"wer_dev,params"`` (or a sequence) -> validated objective names, aliases resolved."""
    names = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for raw in names:
        name = OBJECTIVE_ALIASES.get(raw.strip(), raw.strip())
        if name not in OBJECTIVES:
            raise ValueError(
                f"objective {raw.strip()!r} does not exist; choose from {', '.join(OBJECTIVES)} "
                f"(aliases: {', '.join(OBJECTIVE_ALIASES)})"
            )
        if name in out:
            raise ValueError(f"objective {name!r} is given twice")
        out.append(name)
    if not out:
        raise ValueError("at least one objective is needed")
    return tuple(out)


@dataclass(frozen=True, kw_only=True)
class SpaceConfig:
    """The define-by-run search space (see `kdprune.orchestration.space`)."""

    methods: tuple[str, ...] = COMPRESSING_METHODS  # categorical; each opens its own sub-space
    target_sparsity: tuple[float, float] = (0.2, 0.8)  # l0 / small: uniform in [lo, hi]
    rank_ratio: tuple[float, float] = (0.1, 0.8)  # lrf: uniform in [lo, hi]
    kd_weights: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)  # categorical; 0 turns KD off
    schedules: tuple[str, ...] = ("joint",)  # one value: fixed; several: searched
    streaming: tuple[bool, ...] = (False,)  # one value: fixed; (False, True): searched
    chunk_sizes: tuple[int, ...] = (8,)  # searched for streaming trials when several
    left_chunks: int = 4

    def check(self) -> None:
        """ValueError naming the first out-of-range field."""
        if not self.methods or any(m not in METHODS for m in self.methods):
            raise ValueError(f"space.methods must be a non-empty subset of {METHODS}")
        lo, hi = self.target_sparsity
        if not 0.0 <= lo <= hi < 1.0:
            raise ValueError(f"space.target_sparsity must satisfy 0 <= lo <= hi < 1, got {lo, hi}")
        lo, hi = self.rank_ratio
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"space.rank_ratio must satisfy 0 < lo <= hi <= 1, got {lo, hi}")
        if not self.kd_weights or any(not (w >= 0.0 and math.isfinite(w)) for w in self.kd_weights):
            raise ValueError(f"space.kd_weights must be finite and >= 0, got {self.kd_weights}")
        if not self.schedules or any(s not in SCHEDULES for s in self.schedules):
            raise ValueError(f"space.schedules must be a non-empty subset of {SCHEDULES}")
        if not self.streaming:
            raise ValueError("space.streaming must list at least one value")
        if not self.chunk_sizes or any(c < 1 for c in self.chunk_sizes):
            raise ValueError(f"space.chunk_sizes must be >= 1, got {self.chunk_sizes}")
        if self.left_chunks < 0:
            raise ValueError(f"space.left_chunks must be >= 0, got {self.left_chunks}")


@dataclass(frozen=True, kw_only=True)
class SweepConfig:
    """One sweep. Paths left empty are filled by `resolved()`."""

    name: str  # MLflow experiment; prefix of the Ray run name
    preset: str = "demo"  # tiny | demo | paper
    trials: int = 16  # trial budget (Tune num_samples)
    objectives: tuple[str, ...] = DEFAULT_OBJECTIVES  # all minimised
    sampler: str = "nsga2"  # nsga2 | tpe
    seed: int = 0  # sampler seed and every trial's training seed
    space: SpaceConfig = field(default_factory=SpaceConfig)
    steps: int = 0  # compression steps per trial (0: the preset's default)
    population_size: int = 0  # NSGA-II population (0: about a third of the budget, 4..50)
    # Resources of one trial (one Ray Train run).
    num_workers: int = 1  # DDP workers per trial
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0  # used when use_gpu
    driver_cpus: float = 1.0  # the Tune function that drives the trial's Train run
    max_concurrent: int = 0  # 0: cluster GPUs (CPUs) / per-trial GPUs (CPUs)
    # Fault tolerance: Train restarts a failed worker group from the last checkpoint up to
    # worker_failures times; Tune restarts a trial whose driver process died.
    worker_failures: int = 2
    trial_failures: int = 2
    # Multi-objective early stopping at rungs (see `kdprune.orchestration.early_stop`).
    early_stopping: bool = True
    eta: float = 2.0  # stop when >= ceil(n / eta) of the n peers at a rung dominate a trial
    min_peers: int = 2  # no decision at a rung before this many other trials reached it
    # Optional constraint through Optuna's constraints_func: params <= params_budget.
    params_budget: float = 0.0  # 0: unconstrained
    # Hypervolume reference point, one value per objective; empty: from the preset
    # (WER 1.0, teacher params x 1.1, ...), fixed when the sweep starts.
    reference_point: tuple[float, ...] = ()
    storage: str = ""  # Ray storage (checkpoints, results): path or URI; "": <workdir>/ray_results
    workdir: str = ""  # caches, trial outputs, sweep state; "": $KDPRUNE_WORKDIR or ./work
    teacher_dir: str = ""  # "": prepared (cached) by the driver for the preset
    # The corpus every trial trains and is evaluated on: all three manifests, or none ("")
    # for the preset's generated corpus (a teacher built by the driver trains on it too).
    train_manifest: str = ""
    dev_manifest: str = ""
    test_manifest: str = ""
    # Configs tried first (Optuna enqueue_trial), e.g. one l0 and one LRF trial; keys are
    # searched params (method, target_sparsity, rank_ratio, kd_weight, ...).
    initial_points: tuple[dict[str, Any], ...] = ()
    # A fixed grid instead of a search (sweeps/method_table.py): exactly these configs, one
    # trial each, in this order (keys as in initial_points, plus seed, schedule, streaming,
    # chunk_size); `trials`, the sampler and the space's ranges are then unused.
    grid: tuple[dict[str, Any], ...] = ()

    def check(self) -> None:
        """ValueError naming the first out-of-range field."""
        if not self.name or any(c in self.name for c in "/\\ "):
            raise ValueError(
                f"sweep name must be non-empty without slashes or spaces: {self.name!r}"
            )
        if self.trials < 1:
            raise ValueError(f"trials must be >= 1, got {self.trials}")
        parse_objectives(self.objectives)
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler {self.sampler!r} does not exist; choose one of {SAMPLERS}")
        self.space.check()
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if self.num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {self.num_workers}")
        if self.cpus_per_worker <= 0 or self.driver_cpus < 0:
            raise ValueError("cpus_per_worker must be > 0 and driver_cpus >= 0")
        if self.use_gpu and self.gpus_per_worker <= 0:
            raise ValueError(f"gpus_per_worker must be > 0, got {self.gpus_per_worker}")
        if self.max_concurrent < 0 or self.worker_failures < 0 or self.trial_failures < 0:
            raise ValueError("max_concurrent, worker_failures and trial_failures must be >= 0")
        if self.eta <= 1.0:
            raise ValueError(f"eta must be > 1, got {self.eta}")
        if self.min_peers < 1:
            raise ValueError(f"min_peers must be >= 1, got {self.min_peers}")
        if self.params_budget < 0:
            raise ValueError(f"params_budget must be >= 0, got {self.params_budget}")
        if self.grid and self.early_stopping:
            raise ValueError("a fixed grid runs every config to its end: early_stopping=False")
        if any(p.get("method") not in METHODS for p in self.grid):
            raise ValueError(f"every grid config needs a method from {METHODS}")
        if self.reference_point and len(self.reference_point) != len(self.objectives):
            raise ValueError(
                f"reference_point has {len(self.reference_point)} values for "
                f"{len(self.objectives)} objectives"
            )
        _ = self.manifests  # all three manifests or none: a ValueError naming the missing

    @property
    def manifests(self) -> dict[str, Path] | None:
        """The user's corpus as {"train", "dev", "test"} paths; None: the preset's."""
        return manifest_selection(self.train_manifest, self.dev_manifest, self.test_manifest)

    def resolved(self) -> SweepConfig:
        """Copy with absolute paths and canonical objective names (Ray changes the working
        directory of every process it starts, so nothing relative may leave the driver)."""
        workdir = Path(self.workdir).resolve() if self.workdir else default_workdir()
        storage = self.storage or str(workdir / "ray_results")
        if "://" not in storage:
            storage = str(Path(storage).resolve())
        teacher = str(Path(self.teacher_dir).resolve()) if self.teacher_dir else ""
        corpus = {
            name: str(Path(getattr(self, name)).resolve())
            for name in ("train_manifest", "dev_manifest", "test_manifest")
            if getattr(self, name)
        }
        return replace(
            self,
            workdir=str(workdir),
            storage=storage,
            teacher_dir=teacher,
            objectives=parse_objectives(self.objectives),
            **corpus,
        )

    @property
    def trial_gpus(self) -> float:
        return self.num_workers * self.gpus_per_worker if self.use_gpu else 0.0

    @property
    def trial_cpus(self) -> float:
        return self.num_workers * self.cpus_per_worker + self.driver_cpus


def changed_settings(
    stored: SweepConfig, given: SweepConfig, settings: Collection[str] | None = None
) -> list[str]:
    """``field: X when started, Y now`` for each of ``settings`` (None: every field) in
    which ``given`` differs from the ``stored`` config of the run being resumed."""
    names = [f.name for f in fields(SweepConfig)] if settings is None else sorted(settings)
    return [
        f"{name}: {getattr(stored, name)!r} when started, {getattr(given, name)!r} now"
        for name in names
        if getattr(stored, name) != getattr(given, name)
    ]


def check_inputs(cfg: SweepConfig) -> None:
    """What a sweep checks before it writes anything or starts Ray: its settings, the
    user's corpus (manifests, audio) and, with a given teacher, that the teacher's
    tokenizer encodes the corpus's transcripts (`kdprune.data.selection`)."""
    cfg = cfg.resolved()
    cfg.check()
    check_data(cfg.manifests, cfg.teacher_dir or None)


def max_concurrent_trials(cfg: SweepConfig, cluster: dict[str, float]) -> int:
    """Trials that fit at once: cluster GPUs / GPUs per trial on GPU sweeps, else cluster
    CPUs / CPUs per trial (workers + driver); at least 1; `cfg.max_concurrent` overrides."""
    if cfg.max_concurrent:
        return cfg.max_concurrent
    if cfg.use_gpu:
        gpus = float(cluster.get("GPU", 0.0))
        return max(1, int(gpus // cfg.trial_gpus)) if gpus else 1
    cpus = float(cluster.get("CPU", os.cpu_count() or 1))
    return max(1, int(cpus // max(cfg.trial_cpus, 1e-9)))


def sweep_state_dir(workdir: str | Path, run_name: str) -> Path:
    """Driver-side state of one sweep run: sweep.json, the Optuna study, rung records."""
    return Path(workdir) / "sweeps" / run_name


def redact(uri: str) -> str:
    """A URI without user:password, for logs, params and tags."""
    if "://" in uri and "@" in uri.split("://", 1)[1].split("/", 1)[0]:
        scheme, rest = uri.split("://", 1)
        host_part, _, path = rest.partition("/")
        return f"{scheme}://***@{host_part.rsplit('@', 1)[1]}" + (f"/{path}" if path else "")
    return uri
