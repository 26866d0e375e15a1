"""Search benchmark P5 (DESIGN §3 "Benchmarks"): hypervolume after N trials of the
product's Optuna multi-objective samplers (NSGA-II, TPE) vs random search at the same
budget, several seeds each, on the tiny preset (goal: Optuna ÷ random >= 1.1).

Every trial is a real `kdprune.compress.compress` run (tiny preset, CPU, ~10-20 s). The
search space is the product's own define-by-run `SearchSpace` (the l0_vs_lrf sweep's
`SpaceConfig()`), the Optuna samplers come from the product's `make_sampler` with the
sweep's settings (NSGA-II population / TPE start-up trials derived from the budget), and
the objectives and the fixed hypervolume reference point are the sweep's (`wer_dev,
params`; reference from the teacher as `tuner.reference_point` makes it). The baseline is
`optuna.samplers.RandomSampler` on the same space.

The study runs in-process with Optuna's ask/tell and one trial at a time, not through Ray
Tune: Ray adds ~20 s of fixed cost per trial (bench/orchestration.py trial_overhead) and
nothing to what is measured here (which configs the sampler proposes). A trial enters the
study by the product's own rule (`search.classify_result`: COMPLETE only with finite
objectives, else FAIL). `compress` caches finished runs by config hash, so a config
proposed twice (e.g. by two samplers with the same seed) is trained once. With one seed,
every sampler draws its random start-up trials from the same RandomSampler stream, so the
samplers share their first trials (NSGA-II's first generation: 4 trials at a budget of 12;
TPE's start-up trials: 4): the comparison is paired, and differences come from what each
does after start-up.

Outputs in --out: ``search.json`` (every trial, every hypervolume history, the summary),
``search.md`` (tables) and ``search_hypervolume.png`` (hypervolume vs trials, mean ± sd
over seeds), written by `search_report.py` beside this file. Progress goes to stderr;
the last stdout line is one JSON object:
``{"measure": "P5", "value": <optuna/random>, "goal": 1.1, "goal_met": …, "details": …}``.

Usage:
    .venv/bin/python bench/search.py                          # 12 trials x seeds 0 1 2 x nsga2, tpe, random
    .venv/bin/python bench/search.py --trials 4 --seeds 0     # quick check
    .venv/bin/python bench/search.py --samplers nsga2 random --trials 20 --out /tmp/p5
    .venv/bin/python bench/search.py --train-manifest train.jsonl --dev-manifest dev.jsonl \
        --test-manifest test.jsonl --teacher path/to/model_dir   # on your corpus
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # search_report.py, beside this file
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


def make_bench_sampler(name: str, trials: int, seed: int):
    """``random``: Optuna's RandomSampler; otherwise the product's sampler for a sweep of
    ``trials`` trials (the same construction `run_sweep` uses)."""
    import optuna

    if name == RANDOM:
        return optuna.samplers.RandomSampler(seed=seed)
    from kdprune.orchestration.config import SweepConfig
    from kdprune.orchestration.search import make_sampler

    return make_sampler(SweepConfig(name="bench-search", trials=trials, sampler=name, seed=seed))


def run_study(
    sampler: str,
    seed: int,
    trials: int,
    *,
    preset: str,
    objectives: Sequence[str],
    reference_point: Sequence[float],
    workdir: Path,
    teacher_dir: str,
    steps: int = 0,
    space: Any = None,
    manifests: dict[str, Path] | None = None,
) -> dict[str, Any]:
    """One study of ``trials`` real compression runs (on ``manifests``, or the preset's
    corpus); returns its trials and hypervolume history (hypervolume of the completed
    trials among the first n, n = 1..trials)."""
    import optuna
    import pandas as pd
    from optuna.trial import TrialState

    from kdprune.analysis.pareto import hypervolume_history
    from kdprune.compress import CompressConfig, compress
    from kdprune.data.selection import manifest_fields
    from kdprune.orchestration.config import SpaceConfig
    from kdprune.orchestration.search import classify_result
    from kdprune.orchestration.space import SearchSpace, compress_dict
    from kdprune.utils import log

    objectives = list(objectives)
    define = SearchSpace(space or SpaceConfig(), preset, seed, steps, manifest_fields(manifests))
    study = optuna.create_study(
        directions=["minimize"] * len(objectives),
        sampler=make_bench_sampler(sampler, trials, seed),
    )
    records: list[dict[str, Any]] = []
    for i in range(trials):
        trial = study.ask()
        const = define(trial)  # suggests the params first: trial.params is filled after
        config = compress_dict({**trial.params, **const})
        t0 = time.time()
        try:
            res = compress(CompressConfig(**config), workdir, teacher_dir=teacher_dir)
            error = False
        except Exception as exc:  # a failed trial counts towards the budget, adds nothing
            log(f"[{sampler} seed {seed}] trial {i + 1} failed: {exc!r}")
            res, error = {"failed": repr(exc)[:500]}, True
        seconds = time.time() - t0
        state, values = classify_result({**res, "final": True}, error, objectives)
        study.tell(trial, values, state=TrialState[state])
        metrics = Path(res.get("model_dir", "")).parent / "metrics.json"
        cached = bool(res.get("model_dir")) and metrics.stat().st_mtime < t0
        records.append(
            {
                "number": trial.number,
                "state": state,
                "params": dict(trial.params),
                "values": values,
                "seconds": round(seconds, 2),
                "cached": cached,
                "model_dir": res.get("model_dir"),
                **({"error": res["failed"]} if error else {}),
            }
        )
        hv = _hypervolume_so_far(records, len(objectives), reference_point)
        shown = " ".join(f"{o}={v:.4g}" for o, v in zip(objectives, values or [], strict=False))
        log(
            f"[{sampler} seed {seed}] trial {i + 1}/{trials} {state} {_knobs(trial.params)}: "
            f"{shown or '-'}; hypervolume {hv:.6g} ({seconds:.1f} s{', cached' if cached else ''})"
        )
    df = pd.DataFrame(
        [
            {
                "run_id": str(r["number"]),
                "eligible": r["state"] == "COMPLETE",
                **{
                    o: (r["values"][k] if r["values"] else math.nan)
                    for k, o in enumerate(objectives)
                },
            }
            for r in records
        ]
    )
    history = hypervolume_history(df, objectives, reference_point)["hypervolume"].tolist()
    return {
        "sampler": sampler,
        "seed": seed,
        "trials": records,
        "hypervolume_history": history,
        "final_hypervolume": history[-1] if history else 0.0,
    }


def _hypervolume_so_far(records, k: int, reference_point) -> float:
    """Hypervolume of the completed trials so far (for the progress line)."""
    import numpy as np

    from kdprune.analysis.pareto import hypervolume

    done = [r["values"] for r in records if r["state"] == "COMPLETE"]
    return hypervolume(np.asarray(done, dtype=float).reshape(-1, k), reference_point)


def _knobs(params: dict[str, Any]) -> str:
    return " ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


def run_benchmark(
    *,
    trials: int,
    seeds: Sequence[int],
    samplers: Sequence[str],
    workdir: Path,
    out_dir: Path,
    preset: str = "tiny",
    objectives: Sequence[str] | None = None,
    reference_point: Sequence[float] | None = None,
    teacher_dir: str | None = None,
    steps: int = 0,
    manifests: dict[str, Path] | None = None,
) -> dict[str, Any]:
    """Every sampler x seed study, the summary, and the three output files; returns the
    P5 result (DESIGN §3 benchmark line, with ``goal_met`` and the output paths).
    ``manifests``: the user's corpus (``{"train", "dev", "test"}``; None: the preset's),
    checked with the teacher's tokenizer before anything is trained."""
    from kdprune.contract import PARAM_DATA
    from kdprune.data.selection import check_coverage, check_data, data_digest
    from kdprune.orchestration.config import SweepConfig, parse_objectives
    from kdprune.orchestration.tuner import reference_point as sweep_reference_point
    from kdprune.prepare import prepare
    from kdprune.utils import log, write_json

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
    log(f"P5: {len(samplers)} samplers x {len(seeds)} seeds x {trials} trials, reference {ref}")
    t0 = time.time()
    runs = []
    for seed in seeds:  # seeds outermost: a partial run still compares samplers side by side
        for name in samplers:
            runs.append(
                run_study(
                    name,
                    seed,
                    trials,
                    preset=preset,
                    objectives=objectives,
                    reference_point=ref,
                    workdir=workdir,
                    teacher_dir=str(teacher_dir),
                    steps=steps,
                    manifests=manifests,
                )
            )
    summary = summarise(runs, samplers)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "json": str(out_dir / "search.json"),
        "markdown": str(out_dir / "search.md"),
        "plot": str(out_dir / "search_hypervolume.png"),
    }
    result = {
        "measure": MEASURE,
        "value": summary["value"],
        "goal": GOAL,
        "goal_met": summary["goal_met"],
        "unit": f"hypervolume ratio {summary['headline_sampler']}/random",
        "device": "cpu",
        "details": {
            "preset": preset,
            "trials": trials,
            "seeds": list(seeds),
            "samplers": list(samplers),
            "objectives": list(objectives),
            "reference_point": list(ref),
            "steps": steps,
            "teacher_dir": str(teacher_dir),
            PARAM_DATA: data_digest(prepared.manifests),
            "manifests": {s: str(p) for s, p in prepared.manifests.items()},
            "constant_objectives": constant_objectives(runs, objectives),
            "wall_s": round(time.time() - t0, 1),
            "summary": summary,
            "files": files,
        },
    }
    write_json(Path(files["json"]), {**result, "runs": runs})
    write_markdown(Path(files["markdown"]), result)
    plot_history(Path(files["plot"]), result)
    return result


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
    ap.add_argument("--trials", type=int, default=12, help="trial budget per study")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument(
        "--samplers", nargs="+", choices=(*SAMPLERS, RANDOM), default=["nsga2", "tpe", RANDOM],
        help="the first non-random one is the headline (default: nsga2, the sweep default)",
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
    if args.trials < 1:
        ap.error("--trials must be >= 1")
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
                trials=args.trials,
                seeds=args.seeds,
                samplers=list(dict.fromkeys(args.samplers)),
                workdir=workdir,
                out_dir=args.out or workdir / "bench" / "search",
                preset=args.preset,
                objectives=args.objectives.split(","),
                reference_point=ref,
                teacher_dir=args.teacher,
                steps=args.steps,
                manifests=manifests,
            )
    except DataError as exc:  # a bad corpus or teacher: one line, status 2
        log(f"error: {exc}")
        return 2
    emit_result(compact(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
