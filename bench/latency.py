"""Latency under a running sweep (issue 16 item 4; goal: spread <= 5 %); one JSON line.

One model (default: the shipped demo teacher) is timed by the one latency protocol
(`kdprune.eval.latency.PROTOCOL`: 1 thread, batch 1, warm-up, best of repeats, the node's
exclusive latency lock) 5 times alone, then 5 times while a 2-trial sweep trains on the
same machine (``sweeps/l0_vs_lrf.py``, demo preset, the given teacher, no early stopping,
2 concurrent trials); beside each locked measurement one without the lock, for contrast.
The spread is (max - min) / min of the 5 locked figures during the sweep, for the
wall-clock latency and for the CPU time of the timing thread (``latency_cpu_ms_per_audio_s``,
which other processes on the machine cannot add to). The sweep is
stopped afterwards (SIGTERM, then SIGKILL of what is left of its process tree).

The sweep's work directory links ``data/`` and ``features/`` of ``--cache-from`` (default
./work, where the demo corpus is cached), so no corpus is built.

Usage:
    .venv/bin/python bench/latency.py                       # ~6 min on 2 cores
    .venv/bin/python bench/latency.py --model path/to/model_dir --runs 5
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]


def measure(model_dir: Path, manifest: Path, exclusive: bool) -> tuple[float, float]:
    """One latency figure (wall and CPU ms per audio second) of the model on the test set."""
    from kdprune.eval.evaluate import features_for_manifest, model_latency
    from kdprune.eval.latency import PROTOCOL
    from kdprune.models.model_dir import load_model_dir

    key = (str(model_dir), str(manifest))
    if key not in _cache:  # loaded once: each measurement times the same model and features
        loaded = load_model_dir(model_dir)
        _cache[key] = (loaded, features_for_manifest(manifest, loaded.model))
    loaded, fs = _cache[key]
    protocol = replace(PROTOCOL, exclusive=exclusive)
    out = model_latency(loaded.model.cpu(), fs, loaded.tokenizer, "cpu", protocol=protocol)
    return float(out["latency_ms_per_audio_s"]), float(out["latency_cpu_ms_per_audio_s"])


_cache: dict = {}


def wait_training(log: Path, n: int, timeout: float) -> int:
    """Wait until ``n`` trial processes have logged a training step (their log lines carry
    ``(run_trial pid=N)``); returns how many did."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        pids = set(re.findall(r"\(run_trial pid=(\d+)\).*? step \d+/\d+ ", text))
        if len(pids) >= n:
            return len(pids)
        time.sleep(5)
    raise TimeoutError(f"{n} training trials not seen in {timeout:.0f} s")


def stop_tree(proc: subprocess.Popen) -> None:
    root = psutil.Process(proc.pid)
    tree = [root, *root.children(recursive=True)]
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(90)
    except subprocess.TimeoutExpired:
        pass
    for p in tree:
        with contextlib.suppress(psutil.Error):
            if p.is_running():
                p.kill()


def spread(xs: list[float]) -> float:
    return (max(xs) - min(xs)) / min(xs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=REPO / "kdprune" / "assets" / "demo_teacher")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--cache-from", type=Path, default=REPO / "work")
    ap.add_argument("--workdir", type=Path, help="the sweep's (default: a new temp dir)")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="kdprune-latency-"))
    work.mkdir(parents=True, exist_ok=True)
    for sub in ("data", "features"):
        if not (work / sub).exists():
            (work / sub).symlink_to((args.cache_from / sub).resolve())
    manifests = sorted((work / "data").glob("demo-*/test.jsonl"))
    if not manifests:
        raise SystemExit(f"no demo corpus under {args.cache_from}/data: run the demo once")
    test = manifests[0]
    with contextlib.redirect_stdout(sys.stderr):
        alone = [measure(args.model, test, True) for _ in range(args.runs)]
        env = {**os.environ, "KDPRUNE_WORKDIR": str(work), "PYTHONUNBUFFERED": "1"}
        env["RAY_DEDUP_LOGS"] = "0"  # every trial's step lines, to see both train
        cmd = [
            sys.executable,
            str(REPO / "sweeps" / "l0_vs_lrf.py"),
            "--preset", "demo",
            "--teacher", str(args.model),
            "--trials", "2",
            "--max-concurrent", "2",
            "--no-early-stopping",
            "--num-cpus", "2",
            "--name", "latency_bench",
        ]  # fmt: skip
        log = open(work / "sweep.err", "w")  # noqa: SIM115 (closed below)
        sweep = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
        try:
            t_wait = time.time()
            training = wait_training(work / "sweep.err", 2, 1200)
            waited = time.time() - t_wait
            locked, unlocked, load = [], [], []
            for _ in range(args.runs):
                load.append(os.getloadavg()[0])
                locked.append(measure(args.model, test, True))
                unlocked.append(measure(args.model, test, False))
        finally:
            stop_tree(sweep)
            log.close()
    wall = {
        k: [w for w, _ in v]
        for k, v in (("locked", locked), ("unlocked", unlocked), ("alone", alone))
    }
    cpu = {
        k: [c for _, c in v]
        for k, v in (("locked", locked), ("unlocked", unlocked), ("alone", alone))
    }
    details = {"model": str(args.model), "protocol": "1 thread, batch 1, 20 test utterances, "
               "2 warm-up, best of 5 passes"}  # fmt: skip
    for kind, figures in (("wall", wall), ("cpu", cpu)):
        for k, xs in figures.items():
            details[f"{kind}_{k}_ms_per_audio_s"] = [round(x, 3) for x in xs]
            details[f"{kind}_{k}_spread"] = round(spread(xs), 4)
    details.update(
        trials_training=training,
        waited_for_training_s=round(waited, 1),
        load_1min=load,
        sweep_log=str(work / "sweep.err"),
    )
    print(
        json.dumps(
            {
                "measure": "latency_spread_during_sweep",
                "value": round(spread(wall["locked"]), 4),
                "goal": 0.05,
                "unit": "(max-min)/min of the 5 locked wall-clock figures",
                "details": details,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
