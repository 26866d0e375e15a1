"""The one place a sweep's Ray Tune run is built, started, resumed and summarised.

`run_sweep(cfg)`: check MLflow (fail fast) -> prepare the teacher once (cached) -> start
or attach to Ray -> the sweep's rung store, Optuna searcher and MLflow callback -> a
`Tuner` over `run_trial` (each trial one Ray Train run) -> the final Pareto front. With
``resume``, the latest run of the sweep (or a named one) continues where its driver died:
Tune restores its trials and searcher, Ray Train restores each unfinished trial from its
last checkpoint, MLflow runs are found again by trial id.

Driver-side state lives in ``<workdir>/sweeps/<run_name>/``: ``sweep.json`` (the config,
the MLflow parent run, the fixed hypervolume reference point, the teacher's content hash:
a resume with other settings is refused), ``optuna.db`` (the study:
``optuna-dashboard sqlite:///.../optuna.db``), ``rungs.json`` (early-stopping records) and
``trials/<trial_id>/`` (each trial's model directory).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

from kdprune.contract import (
    COUNT_METRICS,
    LATENCY,
    SWEEP_GRID,
    SWEEP_SEARCH,
    resolve_tracking_uri,
    ui_runs_path,
)
from kdprune.data.selection import check_coverage, manifest_fields
from kdprune.orchestration.autoscaler import planned_resources
from kdprune.orchestration.config import (
    SweepConfig,
    changed_settings,
    check_inputs,
    max_concurrent_trials,
    redact,
    sweep_state_dir,
)
from kdprune.orchestration.interrupt import StopSignals, resume_command
from kdprune.orchestration.local_ray import connect_ray, local_cpus
from kdprune.orchestration.worker import Trainer
from kdprune.utils import from_dict, log, read_json, to_dict, write_json


@dataclass(frozen=True)
class SweepRun:
    """A started sweep run: what `sweep.json` holds."""

    run_name: str
    config: SweepConfig
    parent_run_id: str
    reference_point: tuple[float, ...]
    status: str = "running"  # running | finished | interrupted
    manifests: dict[str, str] = field(default_factory=dict)  # the corpus: {split: manifest}
    teacher_digest: str = ""  # the teacher's content (`model_dir_digest`); "": none known

    @property
    def state_dir(self) -> Path:
        return sweep_state_dir(self.config.workdir, self.run_name)

    @property
    def optuna_url(self) -> str:
        return f"sqlite:///{self.state_dir / 'optuna.db'}"

    def save(self) -> None:
        write_json(self.state_dir / "sweep.json", self)

    @classmethod
    def load(cls, state_dir: Path) -> SweepRun:
        data = read_json(Path(state_dir) / "sweep.json")
        config = {k: v for k, v in data["config"].items() if k != "trainer"}  # before 2026-12
        return cls(
            data["run_name"],
            from_dict(SweepConfig, config),
            data["parent_run_id"],
            tuple(data["reference_point"]),
            data.get("status", "running"),
            data.get("manifests", {}),
            data.get("teacher_digest", ""),
        )


def find_run(workdir: str | Path, name: str, resume: str | bool) -> Path | None:
    """State folder of the run to resume: ``resume`` names it (run name or path), or the
    most recently started run of sweep ``name``."""
    root = Path(workdir) / "sweeps"
    if isinstance(resume, str) and resume not in ("", "latest"):
        cand = Path(resume) if Path(resume).is_dir() else root / resume
        return cand if (cand / "sweep.json").exists() else None
    runs = [p.parent for p in root.glob(f"{name}-*/sweep.json")]
    return max(runs, key=lambda p: p.name) if runs else None


class PreparedTeacher(NamedTuple):
    model_dir: str
    metrics: dict[str, Any]  # as measured when it was trained (sizes only for a given one)
    manifests: dict[str, str]  # the corpus: {split: manifest path}


def prepare_teacher(cfg: SweepConfig) -> PreparedTeacher:
    """Teacher directory, metrics and corpus (the given teacher, or the preset's: cached
    under the workdir, or trained there by one Ray Train job on the cluster's workers,
    `kdprune.orchestration.teacher_job`), with the corpus and feature caches built once here,
    in the driver, before any trial starts: otherwise every concurrent trial's worker
    synthesises the same corpus at once (seen from a fresh clone: two workers each at
    16 utt/s over the same 6600 files)."""
    from kdprune.orchestration.teacher_job import sweep_teacher
    from kdprune.prepare import prepare

    teacher = sweep_teacher(cfg, cfg.manifests)  # never trained in this process
    prepared = prepare(cfg.preset, Path(cfg.workdir), teacher=teacher, manifests=cfg.manifests)
    manifests = {k: str(Path(v).resolve()) for k, v in prepared.manifests.items()}
    if cfg.teacher_dir:
        m = prepared.teacher.model
        sizes = {"params": m.num_params(), "encoder_params": m.encoder_params()}
        return PreparedTeacher(cfg.teacher_dir, sizes, manifests)
    metrics = prepared.teacher.extra.get("metrics", {})  # as measured when it was trained
    teacher_dir = str(prepared.teacher_dir)
    return PreparedTeacher(teacher_dir, {"model_dir": teacher_dir, **metrics}, manifests)


def reference_point(objectives: tuple[str, ...], teacher: dict[str, Any]) -> tuple[float, ...]:
    """Fixed hypervolume reference: WER max(1, 1.5 x the teacher's) (a point at the
    reference adds no volume, and tiny teachers sit at 100%); sizes x1.1 and times x1.5
    the teacher's."""
    ref = []
    for obj in objectives:
        if obj.startswith("wer"):
            ref.append(max(1.0, 1.5 * float(teacher.get(obj) or 0.0)))
        elif obj == "params_ratio":
            ref.append(1.1)
        elif obj in COUNT_METRICS and teacher.get(obj):
            ref.append(1.1 * float(teacher[obj]))
        elif obj in (LATENCY, "rtf") and teacher.get(obj):
            ref.append(1.5 * float(teacher[obj]))
        else:
            raise ValueError(
                f"no reference point for objective {obj!r} without a teacher measurement; "
                "give SweepConfig.reference_point"
            )
    return tuple(ref)


def build_tuner(run: SweepRun, teacher_dir: str, resume: bool, trainer: Trainer):
    """The sweep's Tuner (new or restored) and its rung-store actor handle (or None):
    searcher, trainable, callbacks, concurrency."""
    import ray
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from kdprune.orchestration.early_stop import StoppingRule, start_store, store_name
    from kdprune.orchestration.search import build_searcher
    from kdprune.orchestration.space import SearchSpace
    from kdprune.orchestration.tracking import MlflowSweepCallback
    from kdprune.orchestration.worker import TrialPlan, run_trial, trial_resources

    cfg = run.config
    rule = StoppingRule(eta=cfg.eta, min_peers=cfg.min_peers)
    stopper, store = "", None
    if cfg.early_stopping:  # the handle must outlive the Tuner: a dropped handle kills it
        store = start_store(run.run_name, rule, run.state_dir / "rungs.json")
        stopper = store_name(run.run_name)
    plan = TrialPlan(
        run_name=run.run_name,
        workdir=cfg.workdir,
        storage=cfg.storage,
        teacher_dir=teacher_dir,
        trainer=trainer,
        num_workers=cfg.num_workers,
        use_gpu=cfg.use_gpu,
        cpus_per_worker=cfg.cpus_per_worker,
        gpus_per_worker=cfg.gpus_per_worker,
        worker_failures=cfg.worker_failures,
        stopper=stopper,
        namespace=ray.get_runtime_context().namespace,
        rule=rule,
    )
    resources = trial_resources(plan, cfg.driver_cpus)
    trainable = tune.with_resources(tune.with_parameters(run_trial, plan=plan), resources)
    exp_path = f"{cfg.storage.rstrip('/')}/{run.run_name}"
    if resume and tune.Tuner.can_restore(exp_path):
        log(f"restoring the Tune run {exp_path}")
        # Errored trials continue too, from their last checkpoint: what takes a sweep
        # down (the driver killed, the node's memory monitor killing workers) errors the
        # trials it interrupts, and a resumed sweep that skipped them would lose a cell
        # of its grid. A trial that fails for its own reason fails again, as FAILED.
        restored = tune.Tuner.restore(
            exp_path, trainable, resume_unfinished=True, resume_errored=True
        )
        return restored, store
    # sized for the cluster at its largest: trials queue, and GPU nodes join for them
    concurrency = max_concurrent_trials(cfg, planned_resources(ray.cluster_resources()))
    trials = len(cfg.grid) or cfg.trials
    log(
        f"{trials} trials, up to {concurrency} at once ({cfg.num_workers} worker(s) x "
        f"{'GPU' if cfg.use_gpu else f'{cfg.cpus_per_worker:g} CPU'} each), "
        + ("a fixed grid" if cfg.grid else f"sampler {cfg.sampler}")
    )
    param_space: dict[str, Any] = {}
    if cfg.grid:  # exactly the grid's configs, in order: no sampler, no early stopping
        from ray.tune.search import BasicVariantGenerator

        from kdprune.orchestration.space import grid_configs, grid_space

        configs = grid_configs(cfg)
        param_space = grid_space(configs)
        # (Tune's max_concurrent_trials does not apply to a generator: it limits itself)
        searcher = BasicVariantGenerator(points_to_evaluate=configs, max_concurrent=concurrency)
    else:
        space = SearchSpace(
            cfg.space, cfg.preset, cfg.seed, cfg.steps, corpus=manifest_fields(cfg.manifests)
        )
        searcher = build_searcher(cfg, space, run.optuna_url, run.run_name)
    callback = MlflowSweepCallback(
        resolve_tracking_uri(workdir=cfg.workdir),
        cfg.name,
        run.run_name,
        run.parent_run_id,
        cfg.objectives,
        run.reference_point,
        run.manifests,
    )
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            num_samples=trials,
            max_concurrent_trials=None if cfg.grid else concurrency,
            reuse_actors=False,
        ),
        run_config=tune.RunConfig(
            name=run.run_name,
            storage_path=cfg.storage,
            # Tune's result files, without its TensorBoard logger (and the hint it prints):
            # MLflow is where results are read (TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1).
            callbacks=[callback, CSVLoggerCallback(), JsonLoggerCallback()],
            failure_config=tune.FailureConfig(max_failures=cfg.trial_failures),
            # checkpoints of trials that train in their Tune function (1 worker), as Train keeps
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            verbose=0,
        ),
    )
    return tuner, store


def teacher_digest(teacher_dir: str) -> str:
    """The teacher's content hash ("": no teacher directory, or none there yet)."""
    from kdprune.models.digest import model_dir_digest

    return model_dir_digest(teacher_dir) if teacher_dir and Path(teacher_dir).is_dir() else ""


def start_run(
    cfg: SweepConfig,
    resume: str | bool,
    prepare: bool = True,
    settings: Collection[str] | None = None,
) -> tuple[SweepRun, str, dict[str, Any]]:
    """The run to execute (new, or the one to resume) with its MLflow parent and teacher;
    ``prepare``: build the preset's teacher and data caches first (for `compress`). A
    resume runs the stored settings: one whose ``settings`` differ is refused (ValueError
    naming each difference)."""
    from kdprune.orchestration.tracking import SweepTracker

    uri = resolve_tracking_uri(workdir=cfg.workdir)
    found = find_run(cfg.workdir, cfg.name, resume) if resume else None
    if resume and found is None:
        raise FileNotFoundError(
            f"no sweep run of {cfg.name!r} to resume under {cfg.workdir}/sweeps"
        )
    if found is not None:
        run = SweepRun.load(found)
        changed = changed_settings(run.config, cfg.resolved(), settings)
        if changed:
            raise ValueError(
                f"sweep run {run.run_name} was started with other settings than this resume "
                f"gives ({'; '.join(changed)}): resume it without those flags (its stored "
                "settings are used), or start a new run without --resume"
            )
        log(f"resuming sweep run {run.run_name} ({found}) with its stored settings")
        teacher_dir = run.config.teacher_dir
        if prepare:
            teacher_dir = prepare_teacher(run.config).model_dir
        if run.teacher_digest and teacher_digest(teacher_dir) != run.teacher_digest:
            raise ValueError(
                f"sweep run {run.run_name} was started with another teacher than the one now "
                f"in {teacher_dir} (changed or gone since): its trials would mix two teachers; "
                "start a new run without --resume"
            )
        kind = SWEEP_GRID if run.config.grid else SWEEP_SEARCH
        SweepTracker(uri, run.config.name, run.run_name, run.manifests).parent_run({}, kind)
        return run, teacher_dir, {}
    kind = SWEEP_GRID if cfg.grid else SWEEP_SEARCH
    run_name = f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    corpus = {s: str(p) for s, p in (cfg.manifests or {}).items()}  # the user's, resolved
    prepared = PreparedTeacher(cfg.teacher_dir, {}, corpus)
    if prepare:
        prepared = prepare_teacher(cfg)
    if cfg.manifests and prepared.model_dir:  # a teacher built on the corpus: check it too
        check_coverage(prepared.model_dir, cfg.manifests)
    teacher_dir, teacher = prepared.model_dir, prepared.metrics
    ref = tuple(cfg.reference_point) or reference_point(cfg.objectives, teacher)
    tracker = SweepTracker(uri, cfg.name, run_name, prepared.manifests)
    params = {
        k: v
        for k, v in to_dict(cfg).items()
        if k not in ("space", "workdir", "storage", "teacher_dir", "reference_point", "grid")
    }
    params.update(
        {f"space.{k}": v for k, v in to_dict(cfg.space).items()},
        storage=redact(cfg.storage),
        reference_point=list(ref),
        teacher_dir=teacher_dir,
    )
    if cfg.grid:
        params["grid_size"] = len(cfg.grid)
    parent = tracker.parent_run(params, kind)
    if cfg.grid:  # the configs themselves, readable in full (a param holds 6000 characters)
        tracker.client.log_dict(parent, {"grid": list(cfg.grid)}, "grid.json")
    run = SweepRun(
        run_name,
        cfg,
        parent,
        ref,
        manifests=prepared.manifests,
        teacher_digest=teacher_digest(teacher_dir),
    )
    run.save()
    return run, teacher_dir, teacher


def run_sweep(
    cfg: SweepConfig,
    resume: str | bool = False,
    num_cpus: int | None = None,
    *,
    trainer: Trainer | None = None,
    settings: Collection[str] | None = None,
    command: Sequence[str] = (),
) -> dict[str, Any]:
    """Run (or resume) a sweep to the end; returns the DESIGN §3 sweep result.

    ``trainer`` is what every trial runs on each of its Ray Train workers: by default
    `kdprune.compress.compress`, for which the driver first prepares (and caches) the
    preset's teacher and data. Any function with `compress`'s signature and result keys
    may stand in, e.g. a seconds-fast one to exercise the orchestration (Ray Train in
    Tune, rungs, checkpoints, resume, MLflow) in tests and benchmarks; it gets
    ``cfg.teacher_dir`` as given and prepares its own inputs. Ray imports it by name on
    every node, so it must be a module-level function of a module the workers can import
    (a driver script's folder is on their path).

    ``settings``: the fields of ``cfg`` its caller chose (a CLI: the flags given; None:
    all); a resume whose chosen settings differ from the run's stored ones is refused
    (`changed_settings`). ``command``: how the caller was started, for the resume line.

    Stopped by SIGINT or SIGTERM (`StopSignals`): the parent and unfinished children are
    KILLED in MLflow, one line says how to resume, and the result (finished trials only in
    its front) carries ``interrupted`` = the signal's name."""
    import ray

    from kdprune.orchestration.search import fail_orphans
    from kdprune.orchestration.tracking import SweepTracker, check_tracking_uri

    t0 = time.time()
    cfg = cfg.resolved()
    check_inputs(cfg)  # settings, the corpus, a given teacher's tokenizer: before anything
    uri = resolve_tracking_uri(workdir=cfg.workdir)
    check_tracking_uri(uri)  # before Ray, the teacher or any trial
    run, teacher_dir, _ = start_run(cfg, resume, prepare=trainer is None, settings=settings)
    if trainer is None:
        from kdprune.compress import compress as trainer
    log(f"MLflow: {redact(uri)} experiment {run.config.name!r}, parent run {run.parent_run_id}")
    stop = StopSignals(lambda: mark_stopped(run, uri, command, stop.signal))
    try:
        with stop:
            started_here = connect_ray(num_cpus or local_cpus(run.config))
            stop.reclaim()
            try:
                # Rung results carry no final objective; Tune would refuse them.
                os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
                os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
                tuner, _store = build_tuner(run, teacher_dir, resume=bool(resume), trainer=trainer)
                with stop.tune_running():
                    tuner.fit()
                if not stop.signal:
                    orphans = 0 if run.config.grid else fail_orphans(run.optuna_url, run.run_name)
                    if orphans:
                        log(f"marked {orphans} orphaned Optuna trial(s) of a killed driver as FAIL")
                    tracker = SweepTracker(uri, run.config.name, run.run_name)
                    lost = tracker.close_orphans(run.parent_run_id)
                    if lost:
                        log(
                            f"closed {lost} MLflow child run(s) as KILLED: their trials started "
                            "after the last saved state of the killed driver and were not resumed"
                        )
                    tracker.update_front(
                        run.parent_run_id, run.config.objectives, run.reference_point
                    )
                    tracker.client.set_terminated(run.parent_run_id, "FINISHED")
                    replace(run, status="finished").save()
            finally:
                if started_here:
                    ray.shutdown()
    except KeyboardInterrupt:  # a second signal, or one before Tune ran
        stop.interrupted()
        if ray.is_initialized():  # stopped while Ray was starting
            ray.shutdown()
    if stop.signal:  # MLflow truthful before the result: Tune has stopped every trial now
        stop.finish_on_stop()
        with contextlib.suppress(Exception):
            SweepTracker(uri, run.config.name, run.run_name).mark_interrupted(run.parent_run_id)
        return {**sweep_result(run, uri, time.time() - t0), "interrupted": stop.signal}
    return sweep_result(run, uri, time.time() - t0)


def mark_stopped(run: SweepRun, uri: str, command: Sequence[str], signal_name: str) -> None:
    """What a stop signal leaves: MLflow's parent and RUNNING children KILLED, the run's
    state ``interrupted``, and one line with the command that resumes it."""
    from kdprune.orchestration.tracking import SweepTracker

    try:
        tracker = SweepTracker(uri, run.config.name, run.run_name)
        killed = tracker.mark_interrupted(run.parent_run_id)
        replace(run, status="interrupted").save()
    except Exception as exc:  # the resume line matters more than the bookkeeping
        log(f"could not mark the stopped sweep in MLflow: {exc!r}")
        killed = -1
    what = f"{killed} unfinished trial(s) marked KILLED in MLflow" if killed >= 0 else "stopped"
    log(
        f"sweep stopped by {signal_name}: {what}; resume it with: "
        f"{resume_command(command, run.run_name)}"
    )


def sweep_result(run: SweepRun, uri: str, wall_s: float) -> dict[str, Any]:
    """The last-stdout-line JSON of a sweep: where it is tracked and its Pareto front."""
    from mlflow import MlflowClient

    from kdprune.analysis.artifacts import front_table
    from kdprune.analysis.loading import load_trials, state_counts
    from kdprune.analysis.pareto import hypervolume, pareto_front

    objectives, name = run.config.objectives, run.config.name
    df = load_trials(name, uri, parent_run_id=run.parent_run_id)
    front = pareto_front(df, objectives)
    rows = front_table(front, objectives).to_dict(orient="records")
    pareto = [{k: _plain(v) for k, v in r.items()} for r in rows]
    values = front[list(objectives)].to_numpy(dtype=float) if len(front) else []
    return {
        "tracking_uri": redact(uri),
        "experiment": run.config.name,
        "parent_run_id": run.parent_run_id,
        "run_name": run.run_name,
        # `mlflow ui --host 127.0.0.1 --backend-store-uri <tracking_uri>`, then this path: the trials view
        "mlflow_ui_path": ui_runs_path(
            MlflowClient(uri).get_experiment_by_name(name).experiment_id
        ),
        "objectives": list(objectives),
        "pareto": pareto,
        "hypervolume": hypervolume(values, run.reference_point) if len(front) else 0.0,
        "reference_point": list(run.reference_point),
        "trials": state_counts(df),
        "sweep_dir": str(run.state_dir),
        "optuna_storage": None if run.config.grid else run.optuna_url,  # a grid: no study
        "storage": redact(run.config.storage),
        "wall_s": round(wall_s, 1),
    }


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v
