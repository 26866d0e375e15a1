"""Command line shared by the scripts in ``sweeps/``: each script names its sweep, its
search space and its smoke test, and calls `main`; everything else is common.

Progress goes to stderr; the last stdout line is the sweep's JSON result (DESIGN §3).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable
from dataclasses import fields, replace
from typing import Any

from kdprune.cli import add_manifest_flags, manifests_from_args
from kdprune.contract import PRESETS
from kdprune.data.selection import manifest_fields
from kdprune.orchestration.config import (
    SAMPLERS,
    SpaceConfig,
    SweepConfig,
    check_inputs,
    parse_objectives,
)
from kdprune.orchestration.interrupt import EXIT_CODES
from kdprune.orchestration.tuner import run_sweep
from kdprune.orchestration.worker import Trainer
from kdprune.utils import emit_result, log

# Final metrics the closing summary shows beside the objectives.
SUMMARY_METRICS = ("wer_test", "params")


def build_parser(doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=doc.split("\n\n")[0] if doc else None,
        epilog=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--smoke-test", action="store_true", help="4 short trials on the tiny preset")
    p.add_argument("--preset", choices=PRESETS, help="default: demo")
    p.add_argument("--trials", type=int, help="trial budget (default: 16; smoke test: 4)")
    p.add_argument("--objectives", help="comma-separated, all minimised (default wer_dev,params; "
                   "also latency_ms_per_audio_s alias latency)")  # fmt: skip
    p.add_argument("--sampler", choices=SAMPLERS, help="default: nsga2")
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--storage",
        help="Ray results/checkpoints: path or s3://... (default <workdir>/ray_results)",
    )
    p.add_argument(
        "--workdir", help="caches, outputs, sweep state (default $KDPRUNE_WORKDIR or ./work)"
    )
    p.add_argument("--resume", nargs="?", const="latest", default=None, metavar="RUN",
                   help="continue the latest run of this sweep (or RUN) after its driver died")  # fmt: skip
    p.add_argument("--name", help="sweep name = MLflow experiment (default: the script's)")
    p.add_argument("--teacher", help="teacher model directory (default: the preset's, cached)")
    add_manifest_flags(p)  # the corpus (default: the preset's; a built teacher trains on it)
    p.add_argument("--steps", type=int, help="compression steps per trial (default: the preset's)")
    p.add_argument("--num-workers", type=int, help="DDP workers per trial (default 1)")
    p.add_argument("--gpu", action="store_true", help="one GPU per worker")
    p.add_argument("--cpus-per-worker", type=float)
    p.add_argument("--max-concurrent", type=int, help="default: cluster GPUs (CPUs) / per trial")
    p.add_argument("--no-early-stopping", action="store_true")
    p.add_argument("--eta", type=float, help="early-stopping aggressiveness (default 2)")
    p.add_argument("--params-budget", type=float, help="constraint: params <= this")
    p.add_argument("--reference-point", help="hypervolume reference, one value per objective "
                   "(default: from the teacher: WER 1, params x1.1, latency x1.5)")  # fmt: skip
    p.add_argument("--max-failures", type=int, help="worker-group restarts per trial (default 2)")
    p.add_argument("--num-cpus", type=int, help="logical CPUs of an embedded Ray (default: cores)")
    return p


def config_from_args(
    args: argparse.Namespace, base: SweepConfig, smoke: dict[str, Any]
) -> SweepConfig:
    """``base`` (the script's sweep) + ``smoke`` overrides when --smoke-test + the flags."""
    cfg = replace(base, **smoke) if args.smoke_test else base
    flags = {
        "preset": args.preset,
        "trials": args.trials,
        "sampler": args.sampler,
        "seed": args.seed,
        "storage": args.storage,
        "workdir": args.workdir,
        "name": args.name,
        "teacher_dir": args.teacher,
        "steps": args.steps,
        "num_workers": args.num_workers,
        "cpus_per_worker": args.cpus_per_worker,
        "max_concurrent": args.max_concurrent,
        "eta": args.eta,
        "params_budget": args.params_budget,
        "worker_failures": args.max_failures,
    }
    cfg = replace(cfg, **{k: v for k, v in flags.items() if v is not None})
    cfg = replace(cfg, **manifest_fields(manifests_from_args(args)))
    if args.objectives:
        cfg = replace(cfg, objectives=parse_objectives(args.objectives), reference_point=())
    if args.reference_point:
        ref = tuple(float(v) for v in args.reference_point.split(","))
        cfg = replace(cfg, reference_point=ref)
    if args.gpu:
        cfg = replace(cfg, use_gpu=True)
    if args.no_early_stopping:
        cfg = replace(cfg, early_stopping=False)
    return cfg


def started_as(argv: list[str]) -> list[str]:
    """This process's command line (interpreter, script and every argument, e.g. a wrapper
    script's own ones before ``argv``), or the script with ``argv`` when called with others."""
    if sys.argv[len(sys.argv) - len(argv) :] == argv:
        return [sys.executable, *sys.argv]
    return [sys.executable, sys.argv[0], *argv]


def chosen_settings(
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    base: SweepConfig,
    smoke: dict[str, Any],
) -> set[str]:
    """The SweepConfig fields the command line sets (differing from the flagless run's):
    what a ``--resume`` must agree with the run's stored settings on."""
    given = config_from_args(args, base, smoke).resolved()
    default = config_from_args(parser.parse_args([]), base, smoke).resolved()
    return {
        f.name for f in fields(SweepConfig) if getattr(given, f.name) != getattr(default, f.name)
    }


SMOKE: dict[str, Any] = {
    "preset": "tiny",
    "trials": 4,
    "initial_points": (
        {"method": "l0", "target_sparsity": 0.5, "kd_weight": 1.0},
        {"method": "lrf", "rank_ratio": 0.5, "kd_weight": 1.0},
    ),
}


def main(
    doc: str | None,
    name: str,
    space: SpaceConfig,
    argv: list[str] | None = None,
    smoke: dict[str, Any] | None = None,
    defaults: dict[str, Any] | None = None,
    trainer: Trainer | None = None,
    extend: Callable[[argparse.ArgumentParser], None] | None = None,
    grid: Callable[[argparse.Namespace, SweepConfig], tuple[dict[str, Any], ...]] | None = None,
) -> int:
    """Parse flags, run (or resume) the sweep, print the front on stderr and the JSON.
    ``defaults`` are SweepConfig fields of this sweep (e.g. its objectives); ``smoke``
    what --smoke-test changes on top (tiny preset, 4 trials, an l0 and an LRF trial);
    ``trainer`` is `run_sweep`'s (default: `kdprune.compress.compress`). A fixed-grid
    sweep adds its flags with ``extend(parser)`` and gives its configs with
    ``grid(args, cfg)`` (not called on --resume: the stored grid is run)."""
    # Imported here, not above, on purpose: tracking loads Ray and pandas (seconds), which
    # a sweep script's --help or a mistyped flag should not wait for.
    from kdprune.orchestration.tracking import TrackingUnavailable

    parser = build_parser(doc)
    if extend is not None:
        extend(parser)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    base = SweepConfig(name=name, space=space, **(defaults or {}))
    try:  # Tune and Ray print tables and worker output on stdout: keep it for the result
        smoke = {**SMOKE, **(smoke or {})}
        cfg = config_from_args(args, base, smoke)
        check_inputs(cfg)  # bad settings or data: one error, before a teacher, MLflow or Ray
        if grid is not None and not args.resume:
            points = tuple(grid(args, cfg))
            cfg = replace(cfg, grid=points, trials=len(points), early_stopping=False)
        with contextlib.redirect_stdout(sys.stderr):
            result = run_sweep(
                cfg,
                resume=args.resume or False,
                num_cpus=args.num_cpus,
                trainer=trainer,
                settings=chosen_settings(args, parser, base, smoke),
                command=started_as(argv),
            )
    except (ValueError, FileNotFoundError, TrackingUnavailable) as exc:
        log(f"error: {exc}")
        return 2
    if result.get("interrupted"):  # the resume line is out; the front holds finished trials
        log(f"interrupted: {len(result['pareto'])} finished trial(s) on the Pareto front")
        emit_result(result)
        return EXIT_CODES[result["interrupted"]]
    log(f"Pareto front ({', '.join(result['objectives'])}), {len(result['pareto'])} trial(s):")
    print(front_summary(result["pareto"], result["objectives"]), file=sys.stderr, flush=True)
    log(f"open it: mlflow ui --backend-store-uri {result['tracking_uri']} --host 127.0.0.1")
    emit_result(result)
    return 0


def front_summary(rows: list[dict[str, Any]], objectives: list[str] | tuple[str, ...]) -> str:
    """The front as an aligned text table: method label, its settings (s: target sparsity,
    r: rank ratio, kd: KD weight), then each objective and the other final metrics, in
    readable units (WER in %, parameter counts in k/M)."""
    from kdprune.analysis.report import text_table  # pandas: loaded once a front is shown

    shown = [*objectives, *(m for m in SUMMARY_METRICS if m not in objectives)]
    return text_table(rows, ["label", "settings", *shown, "trial_id"])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(None, "sweep", SpaceConfig()))
