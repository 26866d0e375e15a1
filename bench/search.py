"""Search benchmark P5 (DESIGN §3 "Benchmarks"): the product's default search (its Optuna
sampler plus the sweep's multi-objective early stopping) against random search without
stopping, at equal compute: each study gets the same CPU-seconds budget, several seeds
each (goal: final hypervolume, product ÷ random >= 1.1).

Every trial is a real `kdprune.compress.compress` run (CPU, one torch thread). The search
space is the product's own define-by-run `SearchSpace` (the l0_vs_lrf sweep's
`SpaceConfig()`), the product's sampler comes from `make_sampler` with the sweep's default
settings (`SweepConfig()`: NSGA-II, 16 trials -> population 5), and its early stopping is
the sweep's rung rule (`early_stop`, eta and min_peers from `SweepConfig()`), applied in
this process at the rungs `compress` reports (bench/search_budget.py). Random search is
`optuna.samplers.RandomSampler` on the same space, every trial trained to the end. The
objectives and the fixed hypervolume reference point are the sweep's (`wer_dev, params`;
reference from the teacher as `tuner.reference_point` makes it).

Compute is each trial's process CPU time (this process and its reaped DataLoader
worker), charged to its study; a study asks for trials while its spent CPU is below the
budget, and its final hypervolume counts the trials that finished within the budget. A
config met twice (the arms share their seeded random start-up trials) is replayed from a
cost ledger and charged what it cost when trained (bench/search_budget.py). The study runs
in-process with Optuna's ask/tell, not through Ray Tune: Ray adds ~20 s of fixed cost per
trial (bench/orchestration.py) to both arms alike and nothing to what is measured here.

Outputs in --out: ``search.json`` (every trial with its CPU cost, every study's
hypervolume-vs-CPU curve, the summary), ``search.md`` and ``search_hypervolume.png``
(hypervolume vs CPU minutes, mean ± sd over seeds), written by `search_report.py`.
Progress goes to stderr; the last stdout line is one JSON object:
``{"measure": "P5", "value": <product/random>, "goal": 1.1, "goal_met": …, "details": …}``.

Usage:
    taskset -c 1 .venv/bin/python bench/search.py --preset demo --steps 100 --budget-min 13
    .venv/bin/python bench/search.py --budget-min 1 --seeds 0      # tiny preset, quick check
    .venv/bin/python bench/search.py --samplers tpe random --preset demo --steps 100
    .venv/bin/python bench/search.py --train-manifest train.jsonl --dev-manifest dev.jsonl \
        --test-manifest test.jsonl --teacher path/to/model_dir   # on your corpus
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # search_*.py, beside this file
from search_budget import Ledger, run_budgeted_trial  # noqa: E402
from search_report import (  # noqa: E402
    GOAL,
    RANDOM,
    compact,
    constant_objectives,
    plot_history,
    summarise,
    write_markdown,
)

MEASURE = "P5"
ENDS = "+ends"  # an arm suffix: the sampler after a start at the front's ends (`front_ends`)


def front_ends(space: Any) -> list[dict[str, Any]]:
    """A budget-stratified start: each method's knob range cut into 3 strata, the centres
    of the two outer ones first (the smallest then the largest model of every method:
    the ends of a size-vs-WER front), with the space's largest KD weight."""
    from kdprune.contract import method_knob

    points = []
    for frac_small in (5 / 6, 1 / 6):  # of the knob's range: the smallest models first
        for method in space.methods:
            knob = method_knob(method)
            if knob is None:
                continue
            lo, hi = getattr(space, knob)
            # l0's knob removes (more = smaller), LRF's keeps (more = larger).
            frac = frac_small if knob == "target_sparsity" else 1 - frac_small
            point = {"method": method, knob: lo + frac * (hi - lo)}
            points.append({**point, "kd_weight": max(space.kd_weights)})
    return points


def make_bench_sampler(name: str, seed: int):
    """``random``: Optuna's RandomSampler; otherwise the product's sampler as a sweep with
    the default settings makes it (`run_sweep`'s construction)."""
    import optuna

    if name == RANDOM:
        return optuna.samplers.RandomSampler(seed=seed)
    name = name.removesuffix(ENDS)
    from kdprune.orchestration.config import SweepConfig
    from kdprune.orchestration.search import make_sampler

    return make_sampler(SweepConfig(name="bench-search", sampler=name, seed=seed))


def run_study(
    sampler: str,
    seed: int,
    budget_s: float,
    *,
    preset: str,
    objectives: Sequence[str],
    reference_point: Sequence[float],
    workdir: Path,
    teacher_dir: str,
    ledger: Ledger,
    steps: int = 0,
    max_trials: int = 1000,
    space: Any = None,
    manifests: dict[str, Path] | None = None,
) -> dict[str, Any]:
    """One study: trials while its CPU spent is below ``budget_s`` (and fewer than
    ``max_trials``), with the sweep's early stopping unless ``sampler`` is random. Returns
    its trials (each with ``cpu_s`` and the study's cumulative ``cpu_total``)."""
    import optuna
    from optuna.trial import TrialState

    from kdprune.compress import CompressConfig
    from kdprune.compress.config import run_key
    from kdprune.data.selection import manifest_fields
    from kdprune.orchestration.config import SpaceConfig, SweepConfig
    from kdprune.orchestration.early_stop import RungRecords, StoppingRule
    from kdprune.orchestration.search import classify_result
    from kdprune.orchestration.space import SearchSpace, compress_dict
    from kdprune.utils import log

    objectives = list(objectives)
    sweep = SweepConfig(name="bench-search")
    rule = StoppingRule(eta=sweep.eta, min_peers=sweep.min_peers)
    stopping = sampler != RANDOM and sweep.early_stopping
    records = RungRecords(rule) if stopping else None
    space = space or SpaceConfig()
    define = SearchSpace(space, preset, seed, steps, manifest_fields(manifests))
    study = optuna.create_study(
        directions=["minimize"] * len(objectives), sampler=make_bench_sampler(sampler, seed)
    )
    for point in front_ends(space) if sampler.endswith(ENDS) else []:
        study.enqueue_trial(point)  # as the sweep's initial_points (points_to_evaluate)
    runs_dir = ledger.path.parent
    trials: list[dict[str, Any]] = []
    spent = 0.0
    while spent < budget_s and len(trials) < max_trials:
        trial = study.ask()
        const = define(trial)  # suggests the params first: trial.params is filled after
        cfg = CompressConfig(**compress_dict({**trial.params, **const}))
        key = run_key(cfg, teacher_dir)
        cost = run_budgeted_trial(
            cfg, key, str(trial.number), workdir=workdir, runs_dir=runs_dir,
            teacher_dir=teacher_dir, ledger=ledger, records=records, rule=rule,
        )  # fmt: skip
        spent += cost.cpu_s
        state, values = classify_result(cost.tune_result(), cost.error, objectives)
        study.tell(trial, values, state=TrialState[state])
        trials.append(
            {
                "number": trial.number,
                "state": state,
                "params": dict(trial.params),
                "values": values,
                "cpu_s": round(cost.cpu_s, 2),
                "cpu_total": round(spent, 2),
                "cached": cost.cached,
                "stopped_at": cost.stopped_at,
                "rungs": cost.rungs,
                "key": key,
                "model_dir": cost.result.get("model_dir"),
                **({"error": cost.result["failed"]} if cost.error else {}),
            }
        )
        shown = " ".join(f"{o}={v:.4g}" for o, v in zip(objectives, values or [], strict=False))
        log(
            f"[{sampler} seed {seed}] trial {len(trials)} {state} {_knobs(trial.params)}: "
            f"{shown or '-'} ({cost.cpu_s:.1f} CPU-s{', cached' if cost.cached else ''}"
            f"{f', stopped at step {cost.stopped_at}' if cost.stopped_at is not None else ''}"
            f"); spent {spent / 60:.2f} of {budget_s / 60:.2f} CPU-min"
        )
    return {"sampler": sampler, "seed": seed, "early_stopping": stopping, "trials": trials}


def _knobs(params: dict[str, Any]) -> str:
    return " ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def run_benchmark(
    *,
    budget_s: float,
    seeds: Sequence[int],
    samplers: Sequence[str],
    workdir: Path,
    out_dir: Path,
    preset: str = "tiny",
    objectives: Sequence[str] | None = None,
    reference_point: Sequence[float] | None = None,
    teacher_dir: str | None = None,
    steps: int = 0,
    max_trials: int = 1000,
    manifests: dict[str, Path] | None = None,
) -> dict[str, Any]:
    """Every sampler x seed study at ``budget_s`` CPU seconds each, the summary, and the
    three output files; returns the P5 result (DESIGN §3 benchmark line, with ``goal_met``
    and the output paths). ``manifests``: the user's corpus (``{"train", "dev", "test"}``;
    None: the preset's), checked with the teacher's tokenizer before anything is trained."""
    from kdprune.contract import PARAM_DATA
    from kdprune.data.selection import check_coverage, check_data, data_digest
    from kdprune.orchestration.config import SweepConfig, parse_objectives
    from kdprune.orchestration.tuner import reference_point as sweep_reference_point
    from kdprune.prepare import prepare
    from kdprune.utils import log

    workdir, out_dir = Path(workdir).resolve(), Path(out_dir).resolve()
    objectives = parse_objectives(objectives or SweepConfig(name="x").objectives)
    check_data(manifests, teacher_dir)  # a bad corpus: one error before any training
    log(f"preparing the {preset} teacher and data (cached under {workdir})")
    prepared = prepare(preset, workdir, teacher=teacher_dir, manifests=manifests)
    teacher_dir = str(prepared.teacher_dir)
    if manifests:  # (a teacher built here trained on the corpus: its dev/test words too)
        check_coverage(teacher_dir, manifests)
    teacher = prepared.teacher.extra.get("metrics", {})  # as measured when it was trained
    ref = tuple(reference_point or sweep_reference_point(objectives, teacher))
    ledger = Ledger(workdir / "bench" / "search_runs" / "ledger.json")
    log(
        f"P5: {len(samplers)} samplers x {len(seeds)} seeds at {budget_s / 60:.2f} CPU-min "
        f"each, reference {ref}, ledger {ledger.path} ({len(ledger.entries)} runs)"
    )
    t0, load0 = time.time(), _load()
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "json": str(out_dir / "search.json"),
        "markdown": str(out_dir / "search.md"),
        "plot": str(out_dir / "search_hypervolume.png"),
    }
    context = {
        "preset": preset,
        "steps": steps,
        "budget_cpu_s": budget_s,
        "max_trials": max_trials,
        "seeds": list(seeds),
        "samplers": list(samplers),
        "objectives": list(objectives),
        "reference_point": list(ref),
        "compute": "process CPU time (self + reaped children), user + system; torch "
        f"threads {_threads()}; CPU affinity {sorted(os.sched_getaffinity(0))}",
        "teacher_dir": str(teacher_dir),
        PARAM_DATA: data_digest(prepared.manifests),
        "manifests": {s: str(p) for s, p in prepared.manifests.items()},
        "files": files,
    }
    runs: list[dict[str, Any]] = []
    studies = [(seed, name) for seed in seeds for name in samplers]
    # Seeds outermost, the product first (random replays its shared start-up trials); the
    # files are rewritten after every study, labelled partial until the last one.
    for i, (seed, name) in enumerate(studies):
        runs.append(
            run_study(
                name,
                seed,
                budget_s,
                preset=preset,
                objectives=objectives,
                reference_point=ref,
                workdir=workdir,
                teacher_dir=teacher_dir,
                ledger=ledger,
                steps=steps,
                max_trials=max_trials,
                manifests=manifests,
            )  # fmt: skip
        )
        partial = (
            f"{i + 1} of {len(studies)} studies done (seeds x samplers)"
            if i + 1 < len(studies)
            else ""
        )
        result = _write_result(runs, context, load0, t0, partial)
    return result


def _write_result(
    runs: list[dict[str, Any]], context: dict[str, Any], load0: list[float], t0: float,
    partial: str,
) -> dict[str, Any]:  # fmt: skip
    """The P5 result of the studies so far, written to the three files."""
    from kdprune.utils import write_json

    summary = summarise(
        runs, context["samplers"], context["objectives"], context["reference_point"],
        context["budget_cpu_s"],
    )  # fmt: skip
    result = {
        "measure": MEASURE,
        "value": summary["value"],
        "goal": GOAL,
        "goal_met": summary["goal_met"],
        "unit": f"final hypervolume ratio {summary['headline_sampler']}/random at equal CPU",
        "device": "cpu",
        "details": {
            **context,
            "partial": partial,
            "early_stopping": {r["sampler"]: r["early_stopping"] for r in runs},
            "load_start_end": [load0, _load()],
            "constant_objectives": constant_objectives(runs, context["objectives"]),
            "wall_s": round(time.time() - t0, 1),
            "summary": summary,
        },
    }
    files = context["files"]
    write_json(Path(files["json"]), {**result, "runs": runs})
    write_markdown(Path(files["markdown"]), result)
    plot_history(Path(files["plot"]), result)
    return result


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def main(argv: list[str] | None = None) -> int:
    from kdprune.cli import add_manifest_flags, manifests_from_args
    from kdprune.contract import PRESETS
    from kdprune.data.selection import DataError
    from kdprune.orchestration.config import SAMPLERS
    from kdprune.utils import default_workdir, emit_result, log

    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--budget-min", type=float, default=13.0, help="CPU minutes per study")
    ap.add_argument("--max-trials", type=int, default=1000, help="trial cap per study")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument(
        "--samplers", nargs="+", choices=(*SAMPLERS, *(s + ENDS for s in SAMPLERS), RANDOM),
        default=["nsga2", RANDOM],
        help="the first non-random one is the headline (default: nsga2, the sweep default); "
        f"every non-random one uses the sweep's early stopping; '{ENDS}': after a start at "
        "the front's ends (front_ends)",
    )  # fmt: skip
    ap.add_argument("--preset", choices=PRESETS, default="tiny")
    ap.add_argument("--objectives", default="wer_dev,params", help="comma-separated, minimised")
    ap.add_argument("--reference-point", help="one value per objective (default: the sweep's)")
    ap.add_argument("--steps", type=int, default=0, help="compression steps (0: the preset's)")
    ap.add_argument("--teacher", help="teacher model directory (default: the preset's, cached)")
    add_manifest_flags(ap)
    ap.add_argument("--workdir", type=Path, help="caches (default $KDPRUNE_WORKDIR or ./work)")
    ap.add_argument("--out", type=Path, help="output folder (default <workdir>/bench/search)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a 1-CPU trial)")
    args = ap.parse_args(argv)
    if args.budget_min <= 0 or args.max_trials < 1:
        ap.error("--budget-min must be > 0 and --max-trials >= 1")
    try:
        manifests = manifests_from_args(args)
    except ValueError as exc:
        ap.error(str(exc))
    import optuna
    import torch

    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    workdir = (args.workdir or default_workdir()).resolve()
    ref = [float(v) for v in args.reference_point.split(",")] if args.reference_point else None
    try:
        with contextlib.redirect_stdout(sys.stderr):  # stdout is for the result line only
            result = run_benchmark(
                budget_s=60.0 * args.budget_min,
                seeds=args.seeds,
                samplers=list(dict.fromkeys(args.samplers)),
                workdir=workdir,
                out_dir=args.out or workdir / "bench" / "search",
                preset=args.preset,
                objectives=args.objectives.split(","),
                reference_point=ref,
                teacher_dir=args.teacher,
                steps=args.steps,
                max_trials=args.max_trials,
                manifests=manifests,
            )
    except DataError as exc:  # a bad corpus or teacher: one line, status 2
        log(f"error: {exc}")
        return 2
    emit_result(compact(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
