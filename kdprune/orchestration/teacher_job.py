"""A sweep's teacher, built as one Ray Train job on the cluster's workers.

A sweep started without ``--teacher`` distils from the preset's teacher
(`kdprune.pipeline.finetune`). Training it inside the sweep driver would put that work on
the head node, which on a cluster is a CPU-only machine (cluster.yaml); so the driver
sends it out as one `TorchTrainer` with one worker (a GPU when the sweep has ``--gpu``),
whose function runs `finetune` on the worker's device. The model directory lands where the
pipeline caches it (``<workdir>/finetune/<preset>-<hash>/model``, the shared workdir on a
cluster) and is reported as the run's checkpoint under ``<storage>/teachers/``.

Built once: the driver first asks `finished_teacher` (it builds nothing), holding a file
lock per preset in the workdir, so a later sweep reuses the teacher and a concurrent one
waits for the first to finish it instead of training a second copy.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kdprune.orchestration.config import SweepConfig
from kdprune.orchestration.local_ray import connect_ray, local_cpus
from kdprune.orchestration.worker import TRAIN_ENV_DEFAULTS
from kdprune.pipeline import finished_teacher
from kdprune.utils import log

TEACHER_RUNS = "teachers"  # Ray Train runs of teacher jobs: <storage>/teachers/<name>


def sweep_teacher(cfg: SweepConfig, manifests: dict[str, Path] | None = None) -> str:
    """The sweep's teacher directory: ``cfg.teacher_dir`` when given; else the preset's
    teacher on ``manifests`` (None: the preset's generated corpus), found in the workdir's
    cache or built there by `build_teacher`. Never trains in this process."""
    cfg = cfg.resolved()
    if cfg.teacher_dir:
        return cfg.teacher_dir
    workdir = Path(cfg.workdir)
    with teacher_lock(workdir, cfg.preset):
        found = finished_teacher(cfg.preset, workdir, manifests)
        if found is not None:
            log(f"{cfg.preset} teacher: {found['model_dir']} (cached)")
            return str(found["model_dir"])
        return build_teacher(cfg, manifests)


@contextmanager
def teacher_lock(workdir: Path, preset: str) -> Iterator[None]:
    """Exclusive, per preset, across the processes (and, on a shared file system, the
    nodes) that share ``workdir``; waits for the holder, saying so."""
    path = Path(workdir) / "finetune" / f".{preset}-teacher.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"another sweep is building the {preset} teacher: waiting for it ({path})")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def build_teacher(cfg: SweepConfig, manifests: dict[str, Path] | None = None) -> str:
    """Train the preset's teacher as one Ray Train job (one worker; ``cfg.use_gpu``: on a
    GPU) on the running Ray cluster, or on an embedded Ray started (and stopped) here;
    returns its model directory. ``cfg`` must be `resolved` (absolute paths)."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    for key, value in TRAIN_ENV_DEFAULTS.items():  # read by TorchTrainer.fit in this process
        os.environ.setdefault(key, value)
    resources: dict[str, float] = {"CPU": cfg.cpus_per_worker}
    if cfg.use_gpu:
        resources["GPU"] = cfg.gpus_per_worker
    name = f"{cfg.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    storage = f"{cfg.storage.rstrip('/')}/{TEACHER_RUNS}"
    log(
        f"training the {cfg.preset} teacher as a Ray Train job on one worker "
        f"({'GPU' if cfg.use_gpu else f'{cfg.cpus_per_worker:g} CPU'}): {storage}/{name}"
    )
    trainer = TorchTrainer(
        train_teacher,
        train_loop_config={
            "preset": cfg.preset,
            "workdir": cfg.workdir,
            "manifests": {k: str(v) for k, v in manifests.items()} if manifests else None,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=1, use_gpu=cfg.use_gpu, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage,
            failure_config=ray.train.FailureConfig(max_failures=cfg.worker_failures),
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
        ),
    )
    t0 = time.time()
    started_here = connect_ray(local_cpus(cfg))
    try:
        result = trainer.fit()
    finally:
        if started_here:
            ray.shutdown()
    model_dir = Path(result.return_value["model_dir"])
    if not (model_dir / "config.json").is_file():  # a worker whose workdir is not ours
        _fetch(result.checkpoint, model_dir)
    log(f"{cfg.preset} teacher built in {time.time() - t0:.0f} s: {model_dir}")
    return str(model_dir)


def train_teacher(config: dict[str, Any]) -> dict[str, Any]:
    """Ray Train worker: `finetune` on this worker's device; the model directory is
    reported as the run's checkpoint and returned (``result.return_value``)."""
    import ray.train
    import ray.train.torch

    from kdprune.pipeline import finetune

    manifests = (
        {k: Path(v) for k, v in config["manifests"].items()} if config["manifests"] else None
    )
    device = ray.train.torch.get_device()
    result = finetune(config["preset"], Path(config["workdir"]), manifests, device=device)
    metrics = {k: v for k, v in result.items() if isinstance(v, (int, float, str))}
    checkpoint = ray.train.Checkpoint.from_directory(result["model_dir"])
    ray.train.report(metrics, checkpoint=checkpoint)
    return {**metrics, "device": str(device)}


def _fetch(checkpoint: Any, model_dir: Path) -> None:
    """Copy the job's checkpoint (the model directory) to ``model_dir``, atomically."""
    if checkpoint is None:
        raise RuntimeError(f"the teacher job reported no model and {model_dir} is missing")
    tmp = model_dir.with_name(model_dir.name + ".fetch")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.to_directory(str(tmp))
    tmp.rename(model_dir)
