"""One sweep trial = one Ray Train run, driven from a Ray Tune function trainable; a
1-worker trial runs the same trainer in the Tune function itself (`in_process`).

`run_trial` (the Tune trainable) turns the trial's config into a `CompressConfig` dict and
fits one `TorchTrainer` named after the Tune trial id, so a restarted trial (driver crash,
`--resume`) finds its Train run again and resumes from the last checkpoint.
`train_fn_per_worker` (every DDP rank) builds the `TrainerContext` and calls the sweep's
trainer (`compress`); its report callback forwards each rung's metrics and rank 0's
checkpoint to Ray Train (and through `TuneReportCallback` to Tune) and applies the
multi-objective rung decision, and its log callback forwards the training loop's means at
each log interval (``train/loss_rnnt``, ``prune/lambda1``...) the same way, so they reach
Tune's results and the trial's MLflow run. Ray Train keeps rank 0's report of each.
A 1-worker trial skips the Train controller and worker group (seconds of fixed cost per
trial, bench/orchestration.py ``trial_overhead``): `run_trial` calls the same `_train`
with a `TuneSession`, so reports, checkpoints, early stopping and resume go through
`ray.tune.report` / `ray.tune.get_checkpoint`, and a crash is retried by Tune
(``trial_failures``) from the last checkpoint instead of by Train (``worker_failures``).
A trial ends with a result carrying ``final=True`` plus either the final metrics,
``stopped_early=True`` or (an invalid config, never retried) ``failed=<reason>``: the
searcher and MLflow read that flag. A Train run that fails (its worker restarts used up)
errors the trial instead, with `TrialFailed`: MLflow records the reason (child FAILED),
and ``--resume`` reruns the trial from its last checkpoint in the same MLflow run.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdprune.contract import TRAIN_NAMESPACE
from kdprune.orchestration.early_stop import StoppingRule, StopTrial, rung_point

# What a trial runs on every Ray Train worker: `kdprune.compress.compress`'s signature,
# (cfg, workdir, out_dir, teacher_dir, ctx) -> the DESIGN §3 final metrics.
Trainer = Callable[..., dict[str, Any]]

# Ray Train settings that cut the fixed cost of a trial (bench/orchestration.py measured
# 26 -> 20 s per 1-worker trial on 2 busy cores): the controller polls its workers, and so
# forwards their reports, every health-check interval (default 2 s; a report blocks until
# polled); the preemption watcher is one more actor per run (a cluster of spot workers
# wants it: set RAY_TRAIN_ENABLE_PREEMPTION_WATCHER=1 there, as cluster.yaml does); the
# Train metrics feed the dashboard's Prometheus panels only. Set values win over these.
TRAIN_ENV_DEFAULTS = {
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "RAY_TRAIN_METRICS_ENABLED": "0",
}
# Set to 1 on the sweep's driver: 1-worker trials run in a Ray Train worker group too (the
# fault tests of that path; the 2-worker path always uses one).
WORKER_GROUP_ENV = "KDPRUNE_TRIAL_WORKER_GROUP"


def _worker_group_wanted() -> bool:
    return os.environ.get(WORKER_GROUP_ENV, "") == "1"


@dataclass(frozen=True)
class TrialPlan:
    """What every trial of a sweep shares (handed to the trainable by `with_parameters`)."""

    run_name: str
    workdir: str  # absolute; trial outputs go to <workdir>/sweeps/<run_name>/trials/<id>
    storage: str  # Ray storage root (path or URI); Train runs live in <storage>/<run>/train
    teacher_dir: str  # "" : compress prepares (and caches) the preset's teacher
    trainer: Trainer  # kdprune.compress.compress, or a function with its signature
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0
    worker_failures: int = 2
    stopper: str = ""  # name of the sweep's RungStore actor ("" : no early stopping)
    namespace: str = ""
    rule: StoppingRule | None = None
    train_env: tuple[tuple[str, str], ...] = tuple(TRAIN_ENV_DEFAULTS.items())
    # decided on the driver (read there from $KDPRUNE_TRIAL_WORKER_GROUP), shipped to trials
    worker_group: bool = field(default_factory=_worker_group_wanted)

    def trial_out_dir(self, trial_id: str) -> Path:
        return Path(self.workdir) / "sweeps" / self.run_name / "trials" / trial_id

    @property
    def in_process(self) -> bool:
        """The trial trains in its Tune function, without a Train worker group."""
        return self.num_workers == 1 and not self.worker_group


def trial_resources(plan: TrialPlan, driver_cpus: float) -> dict[str, float]:
    """What the Tune function of a trial reserves: the driver's CPUs, or, when it trains
    itself (`TrialPlan.in_process`), one worker's CPUs and GPU (the larger CPU figure)."""
    if not plan.in_process:
        return {"cpu": driver_cpus}
    out = {"cpu": max(driver_cpus, plan.cpus_per_worker)}
    if plan.use_gpu:
        out["gpu"] = plan.gpus_per_worker
    return out


class TrainSession:
    """Ray Train's report and checkpoint calls (a worker of a Train run)."""

    @staticmethod
    def report(metrics: dict[str, Any], ckpt_dir: Path | None = None) -> None:
        import ray.train

        ckpt = None if ckpt_dir is None else ray.train.Checkpoint.from_directory(str(ckpt_dir))
        ray.train.report(metrics, checkpoint=ckpt)

    @staticmethod
    def get_checkpoint():
        import ray.train

        return ray.train.get_checkpoint()


class TuneSession:
    """Ray Tune's report and checkpoint calls (a Tune function training by itself)."""

    @staticmethod
    def report(metrics: dict[str, Any], ckpt_dir: Path | None = None) -> None:
        import ray.tune

        ckpt = None if ckpt_dir is None else ray.tune.Checkpoint.from_directory(str(ckpt_dir))
        ray.tune.report(metrics, checkpoint=ckpt)

    @staticmethod
    def get_checkpoint():
        import ray.tune

        return ray.tune.get_checkpoint()


def _scalar_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """Numbers (finite or not), bools and short strings: what Tune and MLflow can take."""
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        if isinstance(v, bool) or isinstance(v, str) and len(v) < 1000:
            out[k] = v
        elif isinstance(v, (int, float)):
            out[k] = float(v) if isinstance(v, float) else int(v)
        elif hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
            out[k] = float(v.item())
    return out


def step_metrics(step: int, stats: dict[str, Any]) -> dict[str, Any]:
    """A log interval's training means as a result: every key namespaced (the loop's bare
    ``lr`` and ``grad_norm`` go under ``train/``), at the run's global ``step``."""
    named = {k if "/" in k else f"{TRAIN_NAMESPACE}/{k}": v for k, v in stats.items()}
    return {**_scalar_metrics(named), "step": int(step)}


def failure_reason(exc: BaseException, limit: int = 2000) -> str:
    """A short one-paragraph reason: the innermost exception line(s) of a Ray error."""
    text = str(exc).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    tail = [ln for ln in lines if "Error" in ln or "Exception" in ln]
    msg = f"{type(exc).__name__}: " + (tail[-1].strip() if tail else (lines[-1] if lines else ""))
    return msg[:limit]


class TrialFailed(RuntimeError):
    """A trial's Train run failed for good; its message is the one-line reason."""


class RungReporter:
    """The `TrainerContext.report` of one worker: Ray Train report + rung decision."""

    def __init__(
        self, trial_id: str, rank: int, world_size: int, plan: TrialPlan, session=TrainSession
    ) -> None:
        self.trial_id, self.rank, self.world_size, self.plan = trial_id, rank, world_size, plan
        self.session = session
        self.last: dict[str, Any] = {}
        self.count = 0
        self._store = None

    def __call__(self, metrics: dict[str, Any], ckpt_dir: Path | None) -> None:
        clean = _scalar_metrics(metrics)
        self.count += 1
        clean["rung"] = self.count
        keep = ckpt_dir is not None and self.rank == 0 and Path(ckpt_dir).exists()
        self.session.report(clean, ckpt_dir if keep else None)
        self.last = clean
        if self.plan.stopper and self._decide(clean):
            raise StopTrial(f"dominated at step {clean.get('step')}")

    def _decide(self, metrics: dict[str, Any]) -> bool:
        stop = False
        if self.rank == 0:
            point = rung_point(metrics, self.plan.rule or StoppingRule())
            store = self._get_store()
            if point is not None and store is not None:
                import ray

                stop = bool(ray.get(store.decide.remote(self.trial_id, metrics["step"], point)))
        if self.world_size > 1:  # every rank must leave the loop at the same rung
            import torch.distributed as dist

            box = [stop]
            dist.broadcast_object_list(box, src=0)
            stop = bool(box[0])
        return stop

    def on_log(self, step: int, stats: dict[str, float]) -> None:
        """`TrainerContext.on_log`: reports `step_metrics` (called on every rank at the
        same steps, as Ray Train's report requires; Train keeps rank 0's). Not a rung: no
        early-stopping decision, no checkpoint."""
        self.session.report(step_metrics(step, stats))

    def _get_store(self):
        if self._store is None:
            import ray

            try:
                self._store = ray.get_actor(
                    self.plan.stopper, namespace=self.plan.namespace or None
                )
            except ValueError:
                from kdprune.utils import log

                log(f"rung store {self.plan.stopper} not found: no early stopping for this trial")
                return None
        return self._store


def _quiet_report_lines() -> None:
    """Ray Train logs each report at INFO ("Reporting training result N: TrainingReport(
    ...metrics...)", a long line per log interval and rung) through a logger named by its
    file path (`getLogger(__file__)` in ray/train/v2/_internal/execution/context.py), so
    the run's `LoggingConfig(log_level="WARNING")`, which filters ``ray.train.*`` names,
    misses it: that logger is set to WARNING here."""
    import logging

    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray Train layout: nothing to quiet
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def _train(
    cfg_dict: dict[str, Any],
    trial_id: str,
    plan: TrialPlan,
    session,
    rank: int = 0,
    world: int = 1,
    device: str = "auto",
    wrap: Callable | None = None,
) -> None:
    """One trial's training on one rank: dict -> CompressConfig -> `plan.trainer` with a
    TrainerContext reporting through ``session``; ends with the final report."""
    from kdprune.compress import CompressConfig, TrainerContext
    from kdprune.utils import from_dict

    cfg = from_dict(CompressConfig, cfg_dict)
    reporter = RungReporter(trial_id, rank, world, plan, session)
    checkpoint = session.get_checkpoint()
    with checkpoint.as_directory() if checkpoint is not None else nullcontext(None) as resume:
        ctx = TrainerContext(
            rank=rank,
            world_size=world,
            device=device,
            report=reporter,
            on_log=reporter.on_log,
            resume_dir=Path(resume) if resume else None,
            wrap_model=wrap,
        )
        try:
            result = plan.trainer(
                cfg,
                Path(plan.workdir),
                plan.trial_out_dir(trial_id),
                Path(plan.teacher_dir) if plan.teacher_dir else None,
                ctx,
            )
        except StopTrial:
            session.report({**reporter.last, "final": True, "stopped_early": True})
            return
    final = _scalar_metrics(result)
    final.update(final=True, stopped_early=False, rung=reporter.count + 1)
    if "step" not in final and "step" in reporter.last:
        final["step"] = reporter.last["step"]
    session.report(final)


def train_fn_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train worker: `_train` on this rank, DDP-wrapped when there are several."""
    import ray.train
    import ray.train.torch

    _quiet_report_lines()

    plan: TrialPlan = loop_config["plan"]
    trial_id = loop_config["trial_id"]
    tctx = ray.train.get_context()
    rank, world = tctx.get_world_rank(), tctx.get_world_size()
    device = ray.train.torch.get_device()
    if world > 1:
        from kdprune.utils import log

        log(f"trial {trial_id}: DDP rank {rank} of {world} on {device}")

    def wrap(model):
        # Ray Train's DDP (gloo on the CPU, NCCL on CUDA); a stage wraps only the
        # parameters its loss trains, so no unused-parameter search is needed.
        return ray.train.torch.prepare_model(model, move_to_device=False)

    _train(
        loop_config["compress"],
        trial_id,
        plan,
        TrainSession,
        rank,
        world,
        str(device),
        wrap if world > 1 else None,
    )


def run_trial(config: dict[str, Any], plan: TrialPlan) -> None:
    """Ray Tune function trainable: train here (`TrialPlan.in_process`), or build and fit
    one TorchTrainer for this trial."""
    import ray.tune

    from kdprune.compress import CompressConfig, check_compress_config
    from kdprune.orchestration.space import compress_dict
    from kdprune.utils import from_dict

    for key, value in plan.train_env:  # read by TorchTrainer.fit in this process
        os.environ.setdefault(key, value)
    trial_id = ray.tune.get_context().get_trial_id()
    cfg = compress_dict(config)
    try:
        check_compress_config(from_dict(CompressConfig, cfg))
    except (TypeError, ValueError) as exc:  # deterministic: do not retry, record it
        ray.tune.report({"final": True, "failed": f"invalid config: {exc}"})
        return
    if plan.in_process:  # the GPU (if any) is the one Tune gave this process
        _train(cfg, trial_id, plan, TuneSession, device="cuda" if plan.use_gpu else "cpu")
        return
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    resources = {"CPU": plan.cpus_per_worker}
    if plan.use_gpu:
        resources["GPU"] = plan.gpus_per_worker
    trainer = TorchTrainer(
        train_fn_per_worker,
        train_loop_config={
            "compress": cfg,
            "trial_id": trial_id,
            "plan": plan,  # pickled, not JSON: a frozen dataclass importable everywhere
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=plan.num_workers, use_gpu=plan.use_gpu, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=trial_id,  # stable across restarts: the Train run resumes itself
            storage_path=f"{plan.storage.rstrip('/')}/{plan.run_name}/train",
            callbacks=[TuneReportCallback()],
            failure_config=ray.train.FailureConfig(max_failures=plan.worker_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            # Ray Train's own INFO lines (a "Reporting training result ..." per report, the
            # worker group's start-up) stay in its log files; warnings still show.
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
        ),
    )
    try:
        trainer.fit()
    except ray.train.TrainingFailedError as exc:  # Train's own retries are used up
        # An error, not a final result: Tune retries the trial (trial_failures), then marks
        # it ERROR, which `--resume` (resume_errored) reruns; an OOM kill is not final.
        raise TrialFailed(failure_reason(exc)) from exc
