"""Data-path benchmark (issue 12 item 2): one JSON line per measure on stdout.

Usage:
    .venv/bin/python bench/data.py [--steps 100] [--scale 10] [--workers 1] [--workdir work]

  D1  peak RSS of one compression training process (l0 + KD, stage 1, `--steps` steps on the
      demo preset's shipped teacher) on a train manifest `--scale` times the demo corpus ÷
      the same on the demo corpus (goal ≤ 1.15): memory does not grow with the corpus.
  D2  fraction of the training steps' wall time the trainer waits for a batch, at demo
      scale with `--workers` DataLoader workers (goal ≤ 0.05).
  D3  milliseconds per utterance to obtain features: read from the feature cache vs
      computed on the fly (load audio + log-mel), on 200 demo train utterances.

The larger manifest repeats every demo line `--scale` times with a distinct `copy` key and
an absolute audio path, so it holds `--scale`× the utterances (its own cache, `--scale`×
the frames and bytes). It is written to a fixed temporary folder, so its feature cache is
reused by later runs; that cache is filled from the demo cache (the audio is the same) rather
than recomputed, which would take ~10 min a core. Each configuration trains
in a fresh child process; peak RSS is that process's ru_maxrss; its DataLoader workers'
peak is in details.

The children run with glibc's mmap threshold fixed (``MALLOC_MMAP_THRESHOLD_``, default
128 KiB; ``--mmap-threshold 0`` keeps glibc's default). By default glibc raises that
threshold each time a large block is freed, so later tensors come from the heap, whose
top is returned to the OS only when free: the peak then records the order in which the
training batches' tensors were allocated and freed more than what was alive. Measured
2026-12-02 (shared core, 100 steps): default malloc 1675 -> 1982 MB (1.18); fixed
threshold 1077 -> 1127 MB (1.05), the DataLoader worker 455 -> 466 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from kdprune.compress.config import CompressConfig, compress_recipe
from kdprune.compress.stage import freeze, stage_optimiser
from kdprune.compress.student import StudentLoss, build_student
from kdprune.data.feature_cache import open_cache
from kdprune.data.features import FeatureSet, feature_cache_path, on_the_fly_features
from kdprune.pipeline import SHIPPED_DEMO_TEACHER, resolve_manifests
from kdprune.prepare import prepare
from kdprune.train.loop import fit


def emit(measure: str, value, goal: str, unit: str, details: dict) -> None:
    rec = {"measure": measure, "value": value, "goal": goal, "unit": unit, "device": "cpu"}
    print(json.dumps({**rec, "details": details}), flush=True)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def scaled_manifest(train: Path, scale: int) -> Path:
    """`train` repeated `scale` times, each copy's lines made distinct by a `copy` key."""
    out = Path(tempfile.gettempdir()) / "kdprune-bench-data" / f"train_x{scale}.jsonl"
    lines = []
    for k in range(scale):
        for line in train.read_text().splitlines():
            rec = json.loads(line)
            rec["audio_filepath"] = str((train.parent / rec["audio_filepath"]).resolve())
            lines.append(json.dumps({**rec, "copy": k}))
    text = "\n".join(lines) + "\n"
    if not out.is_file() or out.read_text() != text:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    return out


def train_steps(workdir: Path, manifests: dict[str, Path], steps: int, workers: int) -> dict:
    """Stage 1 of an l0 + KD compression for `steps` steps, in this process."""
    torch.manual_seed(0)
    data = prepare("demo", workdir, teacher=SHIPPED_DEMO_TEACHER, manifests=manifests)
    cfg = CompressConfig(preset="demo", method="l0")
    recipe = compress_recipe(cfg)
    teacher = data.teacher.model
    student, state = build_student(cfg, teacher, recipe)
    freeze(teacher)
    module = StudentLoss(student, teacher, state.lagrangian, 1.0, True, recipe.train.ctc_weight)
    opt = stage_optimiser(module, state, recipe)

    def compute_loss(batch, step):
        with torch.no_grad():
            hidden = teacher.encode(batch.feats, batch.feat_lens, return_hidden=True).hidden
        return module(batch, hidden, step)

    train_cfg = replace(recipe.train, max_steps=steps, eval_every=0, log_every=steps)
    res = fit(
        module, compute_loss, opt, data.train, data.tokenizer, train_cfg, data_workers=workers
    )
    return {
        "utterances": len(data.train),
        "frames": sum(data.train.num_frames),
        "n_mels": data.teacher.config.features.n_mels,
        "steps": res.steps,
        "wall_s": res.wall_s,
        "data_wait_s": res.data_wait_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "worker_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def in_child(args: argparse.Namespace, train: Path, dev_test: dict[str, Path]) -> dict:
    cmd = [sys.executable, __file__, "--child", str(train), "--steps", str(args.steps)]
    cmd += ["--workers", str(args.workers), "--workdir", str(args.workdir)]
    cmd += ["--dev", str(dev_test["dev"]), "--test", str(dev_test["test"])]
    env = dict(os.environ)
    if args.mmap_threshold:  # read by glibc when the child starts
        env["MALLOC_MMAP_THRESHOLD_"] = str(args.mmap_threshold)
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def read_ms(fs: FeatureSet, n: int = 200) -> float:
    t0 = time.perf_counter()
    for i in range(min(n, len(fs))):
        fs[i]
    return 1000 * (time.perf_counter() - t0) / min(n, len(fs))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--workdir", type=Path, default=Path("work"))
    ap.add_argument("--mmap-threshold", type=int, default=128 * 1024,
                    help="glibc MALLOC_MMAP_THRESHOLD_ of the children (0: glibc's dynamic default)")  # fmt: skip
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)  # train manifest
    ap.add_argument("--dev", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--test", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.workdir = args.workdir.resolve()
    if args.child:
        m = {"train": args.child, "dev": args.dev, "test": args.test}
        print(json.dumps(train_steps(args.workdir, m, args.steps, args.workers)), flush=True)
        return

    demo = resolve_manifests("demo", args.workdir, None)
    log("feature caches of the demo corpus")
    data = prepare("demo", args.workdir, teacher=SHIPPED_DEMO_TEACHER, manifests=demo)
    cached = read_ms(data.train)
    big = scaled_manifest(demo["train"], args.scale)
    n = len(data.train)
    log(f"feature cache of {big}: filled from the demo cache ({n * args.scale} utterances)")
    path = feature_cache_path(big, data.teacher.config.features, args.workdir / "features")
    open_cache(path, range(n * args.scale), lambda i: data.train[i % n])
    runs = {}
    for name, train in (("demo", demo["train"]), (f"x{args.scale}", big)):
        log(f"{args.steps} compression steps on {name} in a child process")
        runs[name] = in_child(args, train, demo)
        log(json.dumps(runs[name]))
    small, large = runs["demo"], runs[f"x{args.scale}"]
    cmd = f"bench/data.py --steps {args.steps} --scale {args.scale} --workers {args.workers}"
    cmd += f" --mmap-threshold {args.mmap_threshold}"
    emit(
        "D1",
        round(large["peak_rss_mb"] / small["peak_rss_mb"], 4),
        "<= 1.15",
        "ratio",
        {
            "runs": runs,
            "workers_rss_ratio": round(
                large["worker_peak_rss_mb"] / small["worker_peak_rss_mb"], 4
            ),
            # what the features alone took in RAM before this data path (fp16, every rank)
            "in_ram_features_mb": {
                k: round(r["frames"] * r["n_mels"] * 2 / 2**20) for k, r in runs.items()
            },
            "command": cmd,
        },
    )
    emit(
        "D2",
        round(small["data_wait_s"] / small["wall_s"], 4),
        "<= 0.05",
        "fraction",
        {
            "workers": args.workers,
            f"x{args.scale}": round(large["data_wait_s"] / large["wall_s"], 4),
            "command": cmd,
        },
    )
    fly = read_ms(on_the_fly_features(demo["train"], data.teacher.config.features))
    emit("D3", round(cached, 3), "", "ms/utterance", {"on_the_fly_ms": round(fly, 3)})


if __name__ == "__main__":
    main()
