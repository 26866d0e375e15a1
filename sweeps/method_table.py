"""The paper's comparison at one parameter budget, as a table (mean ± sd over seeds):
dense teacher; l0; l0+KD; LRF; LRF+KD; the `small` KD-only student (the paper's baseline);
optionally joint vs sequential and streaming. Runs `kdprune compress` in-process, one run
after another (no search: a fixed grid), reusing finished runs.

Streaming rows start from, distil from and compare with a *streaming* dense teacher: the
teacher fine-tuned under the chunk masks and causal convolution (`compress --method none
--streaming`, --streaming-teacher-steps), since a full-context teacher switched to
streaming without training is far off (measured on demo: 250 steps -> 71 % dev WER).

Usage:
    .venv/bin/python sweeps/method_table.py --preset demo --budget 0.5 --seeds 0 1
    .venv/bin/python sweeps/method_table.py --preset tiny --seeds 0 --steps 10   # minutes
    .venv/bin/python sweeps/method_table.py --preset demo --extra sequential streaming
    .venv/bin/python sweeps/method_table.py --teacher path/to/model_dir   # your own teacher
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import replace
from pathlib import Path

from kdprune.compress import CompressConfig, compress
from kdprune.eval.evaluate import model_latency
from kdprune.models.model_dir import load_model_dir
from kdprune.prepare import prepare
from kdprune.pruning.lrf import rank_ratio_for_sparsity
from kdprune.utils import atomic_write_text, default_workdir, emit_result, log, write_json


def rows_for(budget: float, extra: list[str]) -> list[tuple[str, dict]]:
    rows = [
        ("l0", dict(method="l0", kd_weight=0.0)),
        ("l0+KD", dict(method="l0", kd_weight=1.0)),
        ("LRF", dict(method="lrf", kd_weight=0.0)),
        ("LRF+KD", dict(method="lrf", kd_weight=1.0)),
        ("small+KD (baseline)", dict(method="small", kd_weight=1.0)),
    ]
    if "sequential" in extra:
        rows += [("l0+KD sequential", dict(method="l0", kd_weight=1.0, schedule="sequential"))]
    if "streaming" in extra:
        rows += [
            ("l0+KD streaming", dict(method="l0", kd_weight=1.0, streaming=True)),
            ("LRF+KD streaming", dict(method="lrf", kd_weight=1.0, streaming=True)),
            ("small+KD streaming (baseline)", dict(method="small", kd_weight=1.0, streaming=True)),
        ]
    return rows


def mean_sd(xs: list[float]) -> str:
    if len(xs) == 1:
        return f"{xs[0]:.2f}"
    return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--preset", default="demo")
    ap.add_argument(
        "--budget", type=float, default=0.5, help="target encoder sparsity for every method"
    )
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--steps", type=int, default=0, help="compression steps (0: preset default)")
    ap.add_argument("--extra", nargs="*", default=[], choices=["sequential", "streaming"])
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument(
        "--teacher", type=Path, default=None, help="teacher model dir (default: the preset's)"
    )
    ap.add_argument("--streaming-teacher", type=Path, default=None, help="streaming teacher dir")
    ap.add_argument(
        "--streaming-teacher-steps",
        type=int,
        default=1200,
        help="steps to make the streaming teacher when --streaming-teacher is not given",
    )
    args = ap.parse_args()
    workdir = (args.workdir or default_workdir()).resolve()
    data = prepare(args.preset, workdir, teacher=args.teacher)
    teacher_dir, teacher = data.teacher_dir.resolve(), data.teacher
    rank_ratio = rank_ratio_for_sparsity(teacher.model, args.budget)
    # Teacher latency measured here, like every student's, so the column compares like with like.
    t_lat = model_latency(teacher.model, data.test, teacher.tokenizer)["latency_ms_per_audio_s"]
    log(
        f"budget: {args.budget:.0%} of encoder params removed; LRF rank_ratio {rank_ratio:.3f} matches it"
    )
    teachers = {False: teacher_dir}
    if "streaming" in args.extra:
        if args.streaming_teacher is None:
            log(f"== streaming teacher ({args.streaming_teacher_steps} steps under chunk masks)")
            st = compress(
                CompressConfig(
                    preset=args.preset,
                    method="none",
                    kd_weight=0.0,
                    streaming=True,
                    steps=args.streaming_teacher_steps,
                ),
                workdir,
                teacher_dir=teacher_dir,
            )
            args.streaming_teacher = Path(st["model_dir"])
        teachers[True] = args.streaming_teacher.resolve()
    results: dict[str, list[dict]] = {}
    for label, over in rows_for(args.budget, args.extra):
        for seed in args.seeds:
            cfg = replace(
                CompressConfig(
                    preset=args.preset,
                    target_sparsity=args.budget,
                    rank_ratio=rank_ratio,
                    seed=seed,
                    steps=args.steps,
                ),
                **over,
            )
            log(f"== {label}, seed {seed}")
            results.setdefault(label, []).append(
                compress(cfg, workdir, teacher_dir=teachers[cfg.streaming])
            )
    base = {
        False: results.get("small+KD (baseline)"),
        True: results.get("small+KD streaming (baseline)"),
    }
    t_metrics = {False: {**teacher.extra["metrics"], "latency_ms_per_audio_s": t_lat}}
    if True in teachers:
        t_metrics[True] = load_model_dir(teachers[True]).extra["metrics"]
    lines = [
        f"Budget: {args.budget:.0%} of the teacher's encoder parameters removed; seeds {args.seeds}; "
        f"preset {args.preset}; steps {args.steps or 'preset default'}; teacher {teacher_dir}"
        + (f"; streaming teacher {teachers[True]}" if True in teachers else "")
        + ". Streaming rows compare with the streaming teacher and the streaming small+KD.",
        "",
        "| method | WER dev % | WER test % | params | encoder params | latency ms/audio s | Δ WER test vs small+KD | Δ WER test vs teacher |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for streaming, m in t_metrics.items():
        name = "dense streaming teacher" if streaming else "dense teacher"
        lines.append(
            f"| {name} | {100 * m['wer_dev']:.2f} | {100 * m['wer_test']:.2f} | {m['params']:,} | "
            f"{m['encoder_params']:,} | {m['latency_ms_per_audio_s']:.2f} | | |"
        )
    for label, rs in results.items():
        streaming = " streaming" in label
        b = base[streaming]
        wt = [100 * r["wer_test"] for r in rs]
        rel_b = (
            f"{100 * (statistics.mean(wt) / statistics.mean([100 * r['wer_test'] for r in b]) - 1):+.1f} %"
            if b
            else "n/a"
        )
        rel_t = (
            f"{100 * (statistics.mean(wt) / (100 * t_metrics[streaming]['wer_test']) - 1):+.1f} %"
        )
        lines.append(
            f"| {label} | {mean_sd([100 * r['wer_dev'] for r in rs])} | {mean_sd(wt)} | {statistics.mean(r['params'] for r in rs):,.0f} | "
            f"{statistics.mean(r['encoder_params'] for r in rs):,.0f} | {mean_sd([r['latency_ms_per_audio_s'] for r in rs])} | {rel_b} | {rel_t} |"
        )
    out = workdir / "method_table" / f"{args.preset}-{int(100 * args.budget)}"
    table = "\n".join(lines) + "\n"
    atomic_write_text(out / "table.md", table)
    write_json(out / "results.json", results)
    print(table, file=sys.stderr)
    emit_result({"table": str(out / "table.md"), "results": str(out / "results.json")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
