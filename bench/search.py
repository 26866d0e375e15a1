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
over seeds). Progress goes to stderr; the last stdout line is one JSON object:
``{"measure": "P5", "value": <optuna/random>, "goal": 1.1, "goal_met": …, "details": …}``.

Usage:
    .venv/bin/python bench/search.py                          # 12 trials x seeds 0 1 2 x nsga2, tpe, random
    .venv/bin/python bench/search.py --trials 4 --seeds 0     # quick check
    .venv/bin/python bench/search.py --samplers nsga2 random --trials 20 --out /tmp/p5
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RANDOM = "random"
GOAL = 1.1
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
) -> dict[str, Any]:
    """One study of ``trials`` real compression runs; returns its trials and hypervolume
    history (hypervolume of the completed trials among the first n, n = 1..trials)."""
    import optuna
    import pandas as pd
    from optuna.trial import TrialState

    from kdprune.analysis.pareto import hypervolume_history
    from kdprune.compress import CompressConfig, compress
    from kdprune.orchestration.config import SpaceConfig
    from kdprune.orchestration.search import classify_result
    from kdprune.orchestration.space import SearchSpace, compress_dict
    from kdprune.utils import log

    objectives = list(objectives)
    define = SearchSpace(space or SpaceConfig(), preset, seed, steps)
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


def _sd(xs: Sequence[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def summarise(
    runs: Sequence[dict[str, Any]], samplers: Sequence[str], goal: float = GOAL
) -> dict[str, Any]:
    """Per sampler: final hypervolume per seed, mean, sd, mean history ± sd, trial counts;
    ratios of each Optuna sampler's mean final hypervolume to random's. The headline
    sampler is the first non-random one given (the product's default, nsga2, first)."""
    per: dict[str, Any] = {}
    for name in samplers:
        mine = sorted((r for r in runs if r["sampler"] == name), key=lambda r: r["seed"])
        finals = [float(r["final_hypervolume"]) for r in mine]
        hists = [r["hypervolume_history"] for r in mine]
        steps = list(zip(*hists, strict=True)) if hists else []
        trials = [t for r in mine for t in r["trials"]]
        per[name] = {
            "seeds": [r["seed"] for r in mine],
            "final_hypervolume": finals,
            "mean": statistics.fmean(finals) if finals else 0.0,
            "sd": _sd(finals),
            "history_mean": [statistics.fmean(s) for s in steps],
            "history_sd": [_sd(s) for s in steps],
            "complete": sum(t["state"] == "COMPLETE" for t in trials),
            "failed": sum(t["state"] != "COMPLETE" for t in trials),
            "cached": sum(bool(t["cached"]) for t in trials),
        }
    ratios: dict[str, float | None] = {}
    base = per.get(RANDOM, {}).get("mean", 0.0)
    for name in samplers:
        if name != RANDOM and RANDOM in per:
            ratios[name] = per[name]["mean"] / base if base > 0 else None
    headline = next((s for s in samplers if s != RANDOM), None)
    value = ratios.get(headline) if headline else None
    return {
        "samplers": per,
        "ratios_vs_random": ratios,
        "headline_sampler": headline,
        "value": value,
        "goal": goal,
        "goal_met": value is not None and value >= goal,
    }


def constant_objectives(
    runs: Sequence[dict[str, Any]], objectives: Sequence[str]
) -> dict[str, float]:
    """Objectives with one value over every completed trial (e.g. WER 1.0 on a tiny
    teacher): the hypervolume then says nothing about them."""
    values = [t["values"] for r in runs for t in r["trials"] if t["state"] == "COMPLETE"]
    out = {}
    for k, obj in enumerate(objectives):
        seen = {v[k] for v in values}
        if len(seen) == 1:
            out[obj] = seen.pop()
    return out


def write_markdown(path: Path, result: dict[str, Any]) -> None:
    d = result["details"]
    s, ref = d["summary"], d["reference_point"]
    box = math.prod(ref)
    head = s["headline_sampler"]
    value = "n/a" if s["value"] is None else f"{s['value']:.3f}"
    lines = [
        f"# P5: hypervolume after {d['trials']} trials, Optuna vs random ({d['preset']} preset)",
        "",
        f"Objectives {', '.join(d['objectives'])} (minimised), reference point "
        f"{', '.join(f'{v:.6g}' for v in ref)}; seeds {' '.join(map(str, d['seeds']))}; "
        f"every trial a real `compress` run.",
        "",
        f"**{head}/random = {value}** (goal >= {s['goal']}: "
        f"{'met' if s['goal_met'] else 'not met'})",
        "",
        "| sampler | final hypervolume (mean ± sd) | ÷ reference box | per seed | ÷ random "
        "| complete / failed | cached |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, p in s["samplers"].items():
        ratio = s["ratios_vs_random"].get(name)
        lines.append(
            f"| {name} | {p['mean']:.6g} ± {p['sd']:.3g} | {p['mean'] / box:.4f} | "
            f"{', '.join(f'{v:.6g}' for v in p['final_hypervolume'])} | "
            f"{'-' if ratio is None else f'{ratio:.3f}'} | {p['complete']} / {p['failed']} | "
            f"{p['cached']} |"
        )
    for obj, value in d["constant_objectives"].items():
        lines += [
            "",
            f"Note: {obj} is {value:.6g} in every completed trial, so the hypervolume only "
            "ranks the other objective(s) here.",
        ]
    n = d["trials"]
    lines += [
        "",
        "Mean hypervolume after n trials:",
        "",
        "| sampler | " + " | ".join(str(i) for i in range(1, n + 1)) + " |",
        "|---|" + "---|" * n,
    ]
    for name, p in s["samplers"].items():
        lines.append(f"| {name} | " + " | ".join(f"{v:.4g}" for v in p["history_mean"]) + " |")
    path.write_text("\n".join(lines) + "\n")


def plot_history(path: Path, result: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    d = result["details"]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, p in d["summary"]["samplers"].items():
        mean, sd = p["history_mean"], p["history_sd"]
        x = list(range(1, len(mean) + 1))
        seeds = len(p["seeds"])
        ax.plot(x, mean, marker="o", ms=3, label=f"{name} ({seeds} seed{'s' * (seeds > 1)})")
        ax.fill_between(
            x, [m - e for m, e in zip(mean, sd, strict=True)],
            [m + e for m, e in zip(mean, sd, strict=True)], alpha=0.2,
        )  # fmt: skip
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trials")
    ax.set_ylabel("hypervolume (" + ", ".join(d["objectives"]) + ")")
    ax.set_title(f"P5: hypervolume vs trials, {d['preset']} preset (mean ± sd)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
) -> dict[str, Any]:
    """Every sampler x seed study, the summary, and the three output files; returns the
    P5 result (DESIGN §3 benchmark line, with ``goal_met`` and the output paths)."""
    from kdprune.orchestration.config import SweepConfig, parse_objectives
    from kdprune.orchestration.tuner import reference_point as sweep_reference_point
    from kdprune.utils import log, read_json, write_json

    workdir, out_dir = Path(workdir).resolve(), Path(out_dir).resolve()
    objectives = parse_objectives(objectives or SweepConfig(name="x").objectives)
    if teacher_dir:  # its metrics (for the reference point) are in its config.json
        extra = read_json(Path(teacher_dir) / "config.json").get("extra", {})
        teacher = {"model_dir": str(teacher_dir), **extra.get("metrics", {})}
    else:
        from kdprune.pipeline import finetune

        log(f"preparing the {preset} teacher (cached under {workdir})")
        teacher = finetune(preset, workdir)
        teacher_dir = str(teacher["model_dir"])
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


def compact(result: dict[str, Any]) -> dict[str, Any]:
    """The stdout line: per-sampler mean/sd final hypervolume and the ratios (histories
    and trials are in the JSON file)."""
    d = result["details"]
    s = d["summary"]
    per = {
        name: {k: p[k] for k in ("mean", "sd", "final_hypervolume", "complete", "failed")}
        for name, p in s["samplers"].items()
    }
    details = {k: v for k, v in d.items() if k != "summary"}
    details.update(samplers=per, ratios_vs_random=s["ratios_vs_random"])
    return {**{k: v for k, v in result.items() if k != "details"}, "details": details}


def main(argv: list[str] | None = None) -> int:
    from kdprune.orchestration.config import SAMPLERS
    from kdprune.presets import PRESETS
    from kdprune.utils import default_workdir, emit_result

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
    ap.add_argument("--workdir", type=Path, help="caches (default $KDPRUNE_WORKDIR or ./work)")
    ap.add_argument("--out", type=Path, help="output folder (default <workdir>/bench/search)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a 1-CPU trial)")
    args = ap.parse_args(argv)
    if args.trials < 1:
        ap.error("--trials must be >= 1")
    import optuna
    import torch

    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    workdir = (args.workdir or default_workdir()).resolve()
    ref = [float(v) for v in args.reference_point.split(",")] if args.reference_point else None
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
        )
    emit_result(compact(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
