"""Orchestration benchmarks (DESIGN §3 "Benchmarks"); one JSON line per measure on stdout.

- P3: Ray Train step time / plain-loop step time, 1 worker, the same demo-preset RNN-T
  and batch, the same torch threads (goal <= 1.10); plain and Ray rounds interleaved,
  medians compared (the machine may be busy).
- trial_overhead (P8, goal <= 15 s): fixed wall time of one 1-worker sweep trial with a
  trainer that does no work (bench/cheap_trainer.py), its MLflow child run included, for
  each way to run it, in one run: a Train worker group with Ray Train's defaults, with
  kdprune's (`worker.TRAIN_ENV_DEFAULTS`), and in the Tune function (kdprune's default,
  `TrialPlan.in_process`). Each splits into start -> first report (process, imports,
  controller, worker group, process group) and first report -> done (final report,
  checkpoint-free teardown); beside them the first import of torch + kdprune.compress in
  a fresh interpreter, what every new worker process pays.
- early_stopping: the same sweep of the cheap trainer (fixed configs, through
  `run_sweep(trainer=...)`) with and without the multi-objective rung stopping: summed
  trial time and the Pareto front of each.
- P6: wall time of the demo sweep (``--p6``; a fresh ``--workdir`` measures it from a
  clean clone, corpus and teacher included). Off by default: it takes long on 2 cores.

Usage:
    .venv/bin/python bench/orchestration.py                 # P3, trial_overhead, early_stopping
    .venv/bin/python bench/orchestration.py --only P3
    .venv/bin/python bench/orchestration.py --only early_stopping --es-trials 4   # short
    .venv/bin/python bench/orchestration.py --p6 --workdir /tmp/fresh
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from cheap_trainer import STEP_S_ENV, cheap_compress  # by name, as the Ray workers import it
from compression import preset_model, synthetic_batch

from kdprune.contract import KNOBS, ROLE_TRIAL, TAG_ROLE, TAG_STOPPED_AT_STEP, method_knob

REPO = Path(__file__).resolve().parents[1]


_REAL_STDOUT = sys.stdout


def emit(measure: str, value: float, goal, unit: str, **details) -> None:
    """One JSON line on the real stdout (everything else is sent to stderr)."""
    print(
        json.dumps(
            {
                "measure": measure,
                "value": round(value, 4),
                "goal": goal,
                "unit": unit,
                "device": "cpu",
                "details": details,
            }
        ),
        file=_REAL_STDOUT,
        flush=True,
    )


# -- P3 -------------------------------------------------------------------------------------


def _demo_model_and_batch():
    """The demo preset's RNN-T (random weights) and a fixed batch of 8 x 300 frames."""
    model = preset_model("cpu")
    return model, synthetic_batch(model.cfg, 8, 300, 12, "cpu")


def _timed_steps(model, batch, steps: int, warmup: int) -> float:
    """Seconds per optimiser step of RNN-T (+CTC) training on one fixed batch."""
    from kdprune.train.losses import asr_loss

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        loss = asr_loss(model, batch, batch.feats, 0.3).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


def plain_step_time(steps: int, warmup: int, threads: int) -> float:
    torch.set_num_threads(threads)
    model, batch = _demo_model_and_batch()
    return _timed_steps(model, batch, steps, warmup)


def _ray_worker(config: dict) -> None:
    import ray.train
    import ray.train.torch

    torch.set_num_threads(config["threads"])
    model, batch = _demo_model_and_batch()
    model = ray.train.torch.prepare_model(model)  # world size 1: no DDP wrapper, as here
    batch = batch.to(ray.train.torch.get_device())
    sec = _timed_steps(model, batch, config["steps"], config["warmup"])
    # One report per measured window, as at a rung; Train V2 keeps only metrics that come
    # with a checkpoint in its Result, so send an (empty) one.
    with tempfile.TemporaryDirectory() as d:
        ray.train.report({"step_s": sec}, checkpoint=ray.train.Checkpoint.from_directory(d))


def ray_step_time(steps: int, warmup: int, threads: int, storage: str) -> float:
    import ray.train
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        _ray_worker,
        train_loop_config={"steps": steps, "warmup": warmup, "threads": threads},
        scaling_config=ray.train.ScalingConfig(
            num_workers=1, resources_per_worker={"CPU": threads}
        ),
        run_config=ray.train.RunConfig(name=f"p3-{time.time_ns()}", storage_path=storage),
    )
    return float(trainer.fit().metrics["step_s"])


def bench_p3(steps: int, warmup: int, threads: int, storage: str, rounds: int) -> None:
    """Plain and Ray rounds interleaved, medians compared: on a shared machine the load
    drifts over minutes, which a single before/after pair does not cancel."""
    import statistics

    plain, in_ray = [], []
    for _ in range(rounds):
        plain.append(plain_step_time(steps, warmup, threads))
        in_ray.append(ray_step_time(steps, warmup, threads, storage))
    emit(
        "P3",
        statistics.median(in_ray) / statistics.median(plain),
        1.10,
        "ratio",
        ray_step_s=statistics.median(in_ray),
        plain_step_s=statistics.median(plain),
        ray_rounds_s=in_ray,
        plain_rounds_s=plain,
        steps=steps,
        threads=threads,
        model="demo preset RNN-T, batch 8 x 300 frames",
    )


# -- per-trial overhead ---------------------------------------------------------------------


class _Clock:
    """Tune callback: wall time of each trial from its start to its completion."""

    def __new__(cls):
        from ray.tune import Callback

        class Clock(Callback):
            def __init__(self):
                self.start, self.wall, self.first = {}, {}, {}

            def on_trial_start(self, iteration, trials, trial, **info):
                self.start[trial.trial_id] = time.perf_counter()

            def on_trial_result(self, iteration, trials, trial, result, **info):
                self.first.setdefault(trial.trial_id, time.perf_counter())

            def on_trial_complete(self, iteration, trials, trial, **info):
                self.wall[trial.trial_id] = time.perf_counter() - self.start[trial.trial_id]

        return Clock()


def _mlflow_callback(storage: str, name: str):
    """The sweep's MLflow callback on a sqlite store under ``storage`` (a parent run of
    its own), so each trial pays for its child run as in a sweep."""
    from kdprune.contract import LATENCY
    from kdprune.orchestration.tracking import MlflowSweepCallback, SweepTracker

    uri = f"sqlite:///{storage}/mlflow.db"
    parent = SweepTracker(uri, "overhead", name).parent_run({})
    return MlflowSweepCallback(uri, "overhead", name, parent, ("wer_dev", LATENCY), (1.0, 1e3))


def overhead_variant(
    name: str, train_env: tuple, trials: int, storage: str, worker_group: bool = True
) -> dict:
    from ray import tune

    from kdprune.orchestration.worker import TrialPlan, run_trial, trial_resources

    plan = TrialPlan(
        run_name=f"overhead-{name}",
        workdir=storage,
        storage=storage,
        teacher_dir="",
        trainer=cheap_compress,
        train_env=train_env,
        worker_group=worker_group,
    )
    clock = _Clock()
    space = {"method": "l0", "target_sparsity": 0.5, "kd_weight": 0.0, "steps": 1, "preset": "tiny"}
    t0 = time.perf_counter()
    tune.Tuner(
        tune.with_resources(tune.with_parameters(run_trial, plan=plan), trial_resources(plan, 1.0)),
        param_space={**space, "seed": tune.grid_search(list(range(trials)))},
        tune_config=tune.TuneConfig(max_concurrent_trials=1, reuse_actors=False),
        run_config=tune.RunConfig(
            name=plan.run_name,
            storage_path=storage,
            callbacks=[clock, _mlflow_callback(storage, plan.run_name)],
            verbose=0,
        ),
    ).fit()
    total = time.perf_counter() - t0
    walls = sorted(clock.wall.values())
    firsts = [clock.first[t] - clock.start[t] for t in clock.first]
    return {
        "mean_trial_s": sum(walls) / len(walls),
        "median_trial_s": walls[len(walls) // 2],
        "mean_start_to_first_report_s": sum(firsts) / len(firsts),
        "mean_first_report_to_done_s": sum(walls) / len(walls) - sum(firsts) / len(firsts),
        "sweep_s_per_trial": total / trials,
    }


def fresh_import_s() -> float:
    """Seconds a new Python process takes to import torch and kdprune.compress."""
    code = "import time; t=time.perf_counter(); import torch, kdprune.compress; print(time.perf_counter()-t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def bench_overhead(trials: int, storage: str) -> None:
    from kdprune.orchestration.worker import TRAIN_ENV_DEFAULTS

    out = {
        "worker_group_ray_defaults": overhead_variant("ray", (), trials, storage),
        "worker_group_kdprune_env": overhead_variant(
            "env", tuple(TRAIN_ENV_DEFAULTS.items()), trials, storage
        ),
        "in_process": overhead_variant("inproc", (), trials, storage, worker_group=False),
    }
    before = out["worker_group_kdprune_env"]["mean_trial_s"]
    emit(
        "trial_overhead",
        out["in_process"]["mean_trial_s"],
        15,
        "s/trial",
        before_s=before,
        ratio_after_before=out["in_process"]["mean_trial_s"] / before,
        trials_per_variant=trials,
        variants=out,
        import_torch_kdprune_s=fresh_import_s(),
        kdprune_env=dict(TRAIN_ENV_DEFAULTS),
        load=os.getloadavg(),
        note="trainer does 1 step: the wall time is the fixed cost of a 1-worker trial; "
        "in_process is kdprune's default for 1-worker trials",
    )


# -- early stopping -------------------------------------------------------------------------


def bench_early_stopping(trials: int, workdir: Path) -> None:
    """Same configs (enqueued, so both runs try the same ones), with and without rung
    stopping; each step of the cheap trainer sleeps, so training time dominates the fixed
    cost of a trial."""
    import numpy as np

    from kdprune.orchestration.config import SpaceConfig, SweepConfig
    from kdprune.orchestration.tuner import run_sweep

    space = [("l0", v) for v in np.linspace(0.2, 0.8, trials // 2)]
    space += [("lrf", v) for v in np.linspace(0.15, 0.8, trials - trials // 2)]
    rng = np.random.default_rng(0)
    rng.shuffle(space)
    points = tuple(
        {"method": m, method_knob(m): round(float(v), 3), "kd_weight": 1.0} for m, v in space
    )
    os.environ.update({STEP_S_ENV: "0.1", "OMP_NUM_THREADS": "1"})  # before Ray starts
    runs = {}
    for label, early in (("without", False), ("with", True)):
        cfg = SweepConfig(
            name=f"es_{label}",
            preset="tiny",
            trials=trials,
            steps=60,
            space=SpaceConfig(),
            initial_points=points,
            reference_point=(1.0, 130000.0),
            early_stopping=early,
            workdir=str(workdir / label),
        )
        t0 = time.perf_counter()
        result = run_sweep(cfg, num_cpus=2, trainer=cheap_compress)
        runs[label] = (result, time.perf_counter() - t0, *_trial_cost(result, 60))
    (res_w, wall_w, secs_w, steps_w), (res_o, wall_o, secs_o, steps_o) = (
        runs["with"],
        runs["without"],
    )
    key = ("method", *KNOBS)
    front_w = {tuple(r.get(k) for k in key) for r in res_w["pareto"]}
    front_o = {tuple(r.get(k) for k in key) for r in res_o["pareto"]}
    emit(
        "early_stopping",
        1 - secs_w / secs_o,
        None,
        "fraction of trial time saved",
        trials=trials,
        trial_s_without=secs_o,
        trial_s_with=secs_w,
        train_steps_without=steps_o,
        train_steps_with=steps_w,
        train_steps_saved=1 - steps_w / steps_o,
        sweep_wall_s_without=wall_o,
        sweep_wall_s_with=wall_w,
        stopped_early=res_w["trials"].get("stopped_early", 0),
        pareto_without=len(front_o),
        pareto_with=len(front_w),
        pareto_points_lost=len(front_o - front_w),
        hypervolume_without=res_o["hypervolume"],
        hypervolume_with=res_w["hypervolume"],
    )


def _trial_cost(result: dict, steps: int) -> tuple[float, int]:
    """Summed trial wall time (Tune's time_total_s) and training steps of a sweep."""
    from mlflow import MlflowClient

    client = MlflowClient(result["tracking_uri"])
    exp = client.get_experiment_by_name(result["experiment"])
    runs = client.search_runs([exp.experiment_id], f"tags.`{TAG_ROLE}` = '{ROLE_TRIAL}'")
    secs = float(sum(r.data.metrics.get("time/trial_s", 0.0) for r in runs))
    done = sum(int(float(r.data.tags.get(TAG_STOPPED_AT_STEP, steps))) for r in runs)
    return secs, done


# -- P6 -------------------------------------------------------------------------------------


def bench_p6(workdir: Path, trials: int | None) -> None:
    env = {**os.environ, "KDPRUNE_WORKDIR": str(workdir)}
    args = [sys.executable, str(REPO / "sweeps" / "l0_vs_lrf.py"), "--preset", "demo"]
    if trials:
        args += ["--trials", str(trials)]
    t0 = time.perf_counter()
    proc = subprocess.run(args, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    emit("P6", wall / 60, 20, "min", trials=result["trials"], pareto=len(result["pareto"]))


def _shared_ray(on: bool, num_cpus: int) -> None:
    """One Ray for the P3 and trial-overhead rounds; none while a sweep runs (`run_sweep`
    starts and stops its own embedded Ray, as the sweep scripts do)."""
    import ray

    if on and not ray.is_initialized():
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False)
    elif not on and ray.is_initialized():
        ray.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=("P3", "trial_overhead", "early_stopping", "P6"))
    ap.add_argument("--p6", action="store_true", help="also run the demo sweep (long)")
    ap.add_argument("--p6-trials", type=int)
    ap.add_argument("--steps", type=int, default=20, help="P3 measured steps")
    ap.add_argument("--threads", type=int, default=1, help="P3 torch threads (both loops)")
    ap.add_argument("--rounds", type=int, default=3, help="P3 interleaved plain/Ray rounds")
    ap.add_argument("--overhead-trials", type=int, default=3)
    ap.add_argument("--es-trials", type=int, default=10)
    ap.add_argument("--workdir", type=Path, help="P6 work directory (default: a new temp dir)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="kdprune-bench-"))
    todo = [args.only] if args.only else ["P3", "trial_overhead", "early_stopping"]
    if args.p6 and "P6" not in todo:
        todo.append("P6")
    with contextlib.redirect_stdout(sys.stderr):
        for m in todo:
            _shared_ray(m in ("P3", "trial_overhead"), max(2, args.threads + 1))
            if m == "P3":
                bench_p3(args.steps, 3, args.threads, str(tmp / "ray"), args.rounds)
            elif m == "trial_overhead":
                bench_overhead(args.overhead_trials, str(tmp / "ray"))
            elif m == "early_stopping":
                bench_early_stopping(args.es_trials, tmp / "es")
            elif m == "P6":
                bench_p6(args.workdir or tmp / "p6", args.p6_trials)


if __name__ == "__main__":
    main()
