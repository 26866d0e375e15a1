"""The one place a sweep's Ray Tune run is built, started, resumed and summarised.

`run_sweep(cfg)`: check MLflow (fail fast) -> prepare the teacher once (cached) -> start
or attach to Ray -> the sweep's rung store, Optuna searcher and MLflow callback -> a
`Tuner` over `run_trial` (each trial one Ray Train run) -> the final Pareto front. With
``resume``, the latest run of the sweep (or a named one) continues where its driver died:
Tune restores its trials and searcher, Ray Train restores each unfinished trial from its
last checkpoint, MLflow runs are found again by trial id.

Driver-side state lives in ``<workdir>/sweeps/<run_name>/``: ``sweep.json`` (the config,
the MLflow parent run, the fixed hypervolume reference point), ``optuna.db`` (the study:
``optuna-dashboard sqlite:///.../optuna.db``), ``rungs.json`` (early-stopping records) and
``trials/<trial_id>/`` (each trial's model directory).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kdprune.orchestration.config import (
    SweepConfig,
    max_concurrent_trials,
    redact,
    sweep_state_dir,
)
from kdprune.utils import from_dict, log, read_json, to_dict, write_json

COMPRESS = "kdprune.compress:compress"


@dataclass(frozen=True)
class SweepRun:
    """A started sweep run: what `sweep.json` holds."""

    run_name: str
    config: SweepConfig
    parent_run_id: str
    reference_point: tuple[float, ...]
    status: str = "running"  # running | finished

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
        return cls(
            data["run_name"],
            from_dict(SweepConfig, data["config"]),
            data["parent_run_id"],
            tuple(data["reference_point"]),
            data.get("status", "running"),
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


def prepare_teacher(cfg: SweepConfig) -> tuple[str, dict[str, Any]]:
    """Teacher directory and metrics: the given one, or the preset's (built and cached
    under the workdir by the pipeline) when trials run the real `compress`."""
    if cfg.trainer != COMPRESS:
        return cfg.teacher_dir, {}
    from kdprune.pipeline import finetune

    if cfg.teacher_dir:
        from kdprune.models.model_dir import load_model_dir

        m = load_model_dir(Path(cfg.teacher_dir))
        return cfg.teacher_dir, {
            "params": m.model.num_params(),
            "encoder_params": m.model.encoder_params(),
        }
    log(f"preparing the {cfg.preset} teacher (cached under {cfg.workdir})")
    out = finetune(cfg.preset, Path(cfg.workdir))
    return str(out["model_dir"]), out


def prepare_data(cfg: SweepConfig, teacher_dir: str) -> None:
    """Build the preset's corpus and feature caches once, in the driver, before any trial
    starts: otherwise every concurrent trial's worker synthesises the same corpus at once
    (seen from a fresh clone: two workers each at 16 utt/s over the same 6600 files)."""
    if cfg.trainer != COMPRESS:
        return
    from kdprune.data.features import load_features
    from kdprune.models.model_dir import load_model_dir
    from kdprune.pipeline import resolve_manifests

    workdir = Path(cfg.workdir)
    manifests = resolve_manifests(cfg.preset, workdir, None)
    fcfg = load_model_dir(Path(teacher_dir)).config.features
    for split in ("train", "dev", "test"):
        load_features(manifests[split], fcfg, workdir / "features")


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
        elif obj in ("params", "encoder_params") and teacher.get(obj):
            ref.append(1.1 * float(teacher[obj]))
        elif obj in ("latency_ms_per_audio_s", "rtf") and teacher.get(obj):
            ref.append(1.5 * float(teacher[obj]))
        else:
            raise ValueError(
                f"no reference point for objective {obj!r} without a teacher measurement; "
                "give SweepConfig.reference_point"
            )
    return tuple(ref)


def local_cpus(cfg: SweepConfig, cores: int | None = None) -> int:
    """Logical CPUs of an embedded Ray: every core for training workers, plus a logical
    CPU slot for the (mostly idle) Tune function driving each trial that fits, so a
    2-core machine trains 2 one-worker trials at once instead of 1 beside an idle core."""
    cores = cores or os.cpu_count() or 1
    per_trial = cfg.num_workers * cfg.cpus_per_worker
    slots = max(1, int(cores // per_trial))
    return int(math.ceil(max(cores, slots * per_trial) + slots * cfg.driver_cpus))


def connect_ray(num_cpus: int | None = None) -> bool:
    """Attach to the cluster when RAY_ADDRESS is set (``ray job submit``), else start an
    embedded Ray with its dashboard on loopback. Returns True when Ray was started here.

    The embedded Ray's processes are told where its API server is: Ray Train's placement-
    group cleaner queries the State API without an address, and with two Ray instances on
    one machine its auto-detection fails, so the placement group of a trial whose driver
    died would never be released and the trial's restart would wait for it forever."""
    import ray

    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address="auto", log_to_driver=True)
        return False
    port = _free_port()
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"  # inherited by all
    ray.init(
        address="local",  # a new instance even if `ray start` runs on this machine
        num_cpus=num_cpus,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=port,
        log_to_driver=True,
    )
    return True


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_tuner(run: SweepRun, teacher_dir: str, resume: bool):
    """The sweep's Tuner (new or restored) and its rung-store actor handle (or None):
    searcher, trainable, callback, concurrency."""
    import ray
    from ray import tune

    from kdprune.orchestration.early_stop import StoppingRule, start_store, store_name
    from kdprune.orchestration.search import build_searcher
    from kdprune.orchestration.space import SearchSpace
    from kdprune.orchestration.tracking import MlflowSweepCallback, resolve_tracking_uri
    from kdprune.orchestration.worker import TrialPlan, run_trial

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
        trainer=cfg.trainer,
        num_workers=cfg.num_workers,
        use_gpu=cfg.use_gpu,
        cpus_per_worker=cfg.cpus_per_worker,
        gpus_per_worker=cfg.gpus_per_worker,
        worker_failures=cfg.worker_failures,
        stopper=stopper,
        namespace=ray.get_runtime_context().namespace,
        rule=rule,
    )
    resources = {"cpu": cfg.driver_cpus}
    trainable = tune.with_resources(tune.with_parameters(run_trial, plan=plan), resources)
    exp_path = f"{cfg.storage.rstrip('/')}/{run.run_name}"
    if resume and tune.Tuner.can_restore(exp_path):
        log(f"restoring the Tune run {exp_path}")
        return tune.Tuner.restore(exp_path, trainable, resume_unfinished=True), store
    concurrency = max_concurrent_trials(cfg, ray.cluster_resources())
    log(
        f"{cfg.trials} trials, up to {concurrency} at once ({cfg.num_workers} worker(s) x "
        f"{'GPU' if cfg.use_gpu else f'{cfg.cpus_per_worker:g} CPU'} each), sampler {cfg.sampler}"
    )
    searcher = build_searcher(
        cfg, SearchSpace(cfg.space, cfg.preset, cfg.seed, cfg.steps), run.optuna_url, run.run_name
    )
    callback = MlflowSweepCallback(
        resolve_tracking_uri(cfg.workdir),
        cfg.name,
        run.run_name,
        run.parent_run_id,
        cfg.objectives,
        run.reference_point,
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            num_samples=cfg.trials,
            max_concurrent_trials=concurrency,
            reuse_actors=False,
        ),
        run_config=tune.RunConfig(
            name=run.run_name,
            storage_path=cfg.storage,
            callbacks=[callback],
            failure_config=tune.FailureConfig(max_failures=cfg.trial_failures),
            verbose=0,
        ),
    )
    return tuner, store


def start_run(cfg: SweepConfig, resume: str | bool) -> tuple[SweepRun, str, dict[str, Any]]:
    """The run to execute (new, or the one to resume) with its MLflow parent and teacher."""
    from kdprune.orchestration.tracking import SweepTracker, resolve_tracking_uri

    uri = resolve_tracking_uri(cfg.workdir)
    found = find_run(cfg.workdir, cfg.name, resume) if resume else None
    if resume and found is None:
        raise FileNotFoundError(
            f"no sweep run of {cfg.name!r} to resume under {cfg.workdir}/sweeps"
        )
    if found is not None:
        run = SweepRun.load(found)
        log(f"resuming sweep run {run.run_name} ({found}) with its stored settings")
        teacher_dir, _ = prepare_teacher(run.config)
        prepare_data(run.config, teacher_dir)
        SweepTracker(uri, run.config.name, run.run_name).parent_run({})
        return run, teacher_dir, {}
    run_name = f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    teacher_dir, teacher = prepare_teacher(cfg)
    prepare_data(cfg, teacher_dir)
    ref = tuple(cfg.reference_point) or reference_point(cfg.objectives, teacher)
    tracker = SweepTracker(uri, cfg.name, run_name)
    params = {
        k: v
        for k, v in to_dict(cfg).items()
        if k not in ("space", "workdir", "storage", "teacher_dir", "reference_point")
    }
    params.update(
        {f"space.{k}": v for k, v in to_dict(cfg.space).items()},
        storage=redact(cfg.storage),
        reference_point=list(ref),
        teacher_dir=teacher_dir,
    )
    parent = tracker.parent_run(params)
    run = SweepRun(run_name, cfg, parent, ref)
    run.save()
    return run, teacher_dir, teacher


def run_sweep(
    cfg: SweepConfig, resume: str | bool = False, num_cpus: int | None = None
) -> dict[str, Any]:
    """Run (or resume) a sweep to the end; returns the DESIGN §3 sweep result."""
    import ray

    from kdprune.orchestration.search import fail_orphans
    from kdprune.orchestration.tracking import (
        SweepTracker,
        check_tracking_uri,
        resolve_tracking_uri,
    )

    t0 = time.time()
    cfg = cfg.resolved()
    cfg.check()
    uri = resolve_tracking_uri(cfg.workdir)
    check_tracking_uri(uri)  # before Ray, the teacher or any trial
    run, teacher_dir, _ = start_run(cfg, resume)
    log(f"MLflow: {redact(uri)} experiment {run.config.name!r}, parent run {run.parent_run_id}")
    started_here = connect_ray(num_cpus or local_cpus(run.config))
    try:
        # Rung results carry no final objective; Tune would refuse them.
        os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
        tuner, _store = build_tuner(run, teacher_dir, resume=bool(resume))
        tuner.fit()
        orphans = fail_orphans(run.optuna_url, run.run_name)
        if orphans:
            log(f"marked {orphans} orphaned Optuna trial(s) of a killed driver as FAIL")
        tracker = SweepTracker(uri, run.config.name, run.run_name)
        tracker.update_front(run.parent_run_id, run.config.objectives, run.reference_point)
        tracker.client.set_terminated(run.parent_run_id, "FINISHED")
        replace(run, status="finished").save()
    finally:
        if started_here:
            ray.shutdown()
    return sweep_result(run, uri, time.time() - t0)


def sweep_result(run: SweepRun, uri: str, wall_s: float) -> dict[str, Any]:
    """The last-stdout-line JSON of a sweep: where it is tracked and its Pareto front."""
    from kdprune.analysis.artifacts import front_table
    from kdprune.analysis.loading import load_trials, state_counts
    from kdprune.analysis.pareto import hypervolume, pareto_front

    objectives = run.config.objectives
    df = load_trials(run.config.name, uri, parent_run_id=run.parent_run_id)
    front = pareto_front(df, objectives)
    rows = front_table(front, objectives).to_dict(orient="records")
    pareto = [{k: _plain(v) for k, v in r.items()} for r in rows]
    values = front[list(objectives)].to_numpy(dtype=float) if len(front) else []
    return {
        "tracking_uri": redact(uri),
        "experiment": run.config.name,
        "parent_run_id": run.parent_run_id,
        "run_name": run.run_name,
        "objectives": list(objectives),
        "pareto": pareto,
        "hypervolume": hypervolume(values, run.reference_point) if len(front) else 0.0,
        "reference_point": list(run.reference_point),
        "trials": state_counts(df),
        "sweep_dir": str(run.state_dir),
        "optuna_storage": run.optuna_url,
        "storage": redact(run.config.storage),
        "wall_s": round(wall_s, 1),
    }


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v
