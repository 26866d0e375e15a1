"""The paper's comparison at one parameter budget, as a table (mean ± sd over seeds):
dense teacher; l0; l0+KD; LRF; LRF+KD; the `small` KD-only student (the paper's baseline);
optionally joint vs sequential and streaming. Runs `kdprune compress` in-process, one run
after another (no search: a fixed grid), reusing finished runs.

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
from kdprune.models.model_dir import load_model_dir
from kdprune.pipeline import finetune
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
            ("dense streaming", dict(method="none", kd_weight=0.0, streaming=True)),
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
    args = ap.parse_args()
    workdir = (args.workdir or default_workdir()).resolve()
    teacher_dir = (args.teacher or Path(finetune(args.preset, workdir)["model_dir"])).resolve()
    teacher = load_model_dir(teacher_dir)
    rank_ratio = rank_ratio_for_sparsity(teacher.model, args.budget)
    # Teacher latency measured here, like every student's, so the column compares like with like.
    from kdprune.data.features import load_features
    from kdprune.eval.evaluate import model_latency
    from kdprune.pipeline import resolve_manifests

    test = load_features(
        resolve_manifests(args.preset, workdir, None)["test"],
        teacher.config.features,
        workdir / "features",
    )
    t_lat = model_latency(teacher.model, test, teacher.tokenizer)["latency_ms_per_audio_s"]
    log(
        f"budget: {args.budget:.0%} of encoder params removed; LRF rank_ratio {rank_ratio:.3f} matches it"
    )
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
            results.setdefault(label, []).append(compress(cfg, workdir, teacher_dir=teacher_dir))
    base = {
        False: results.get("small+KD (baseline)"),
        True: results.get("small+KD streaming (baseline)"),
    }
    t_dev = 100 * teacher.extra["metrics"]["wer_dev"]
    t_test = 100 * teacher.extra["metrics"]["wer_test"]
    lines = [
        f"Budget: {args.budget:.0%} of the teacher's encoder parameters removed; seeds {args.seeds}; "
        f"preset {args.preset}; steps {args.steps or 'preset default'}; teacher {teacher_dir}.",
        "",
        "| method | WER dev % | WER test % | params | encoder params | latency ms/audio s | Δ WER test vs small+KD | Δ WER test vs teacher |",
        "|---|---|---|---|---|---|---|---|",
        f"| dense teacher | {t_dev:.2f} | {t_test:.2f} | {teacher.model.num_params():,} | {teacher.model.encoder_params():,} | "
        f"{t_lat:.2f} | | |",
    ]
    for label, rs in results.items():
        b = base[" streaming" in label]
        wt = [100 * r["wer_test"] for r in rs]
        rel_b = (
            f"{100 * (statistics.mean(wt) / statistics.mean([100 * r['wer_test'] for r in b]) - 1):+.1f} %"
            if b
            else "n/a"
        )
        rel_t = f"{100 * (statistics.mean(wt) / t_test - 1):+.1f} %"
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
