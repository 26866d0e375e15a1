"""Reporting of the search benchmark P5 (bench/search.py): hypervolume against the CPU
spent per study, the summary over samplers and seeds at the equal budget, the markdown
tables, the hypervolume-vs-CPU plot and the compact stdout line."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RANDOM = "random"
GOAL = 1.1
GRID_POINTS = 26  # budget fractions 0, 1/25, ..., 1 at which the curves are averaged


def _sd(xs: Sequence[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def hypervolume_at(
    trials: Sequence[dict[str, Any]], cpu_s: float, reference_point: Sequence[float]
) -> float:
    """Hypervolume of a study's completed trials that had finished once ``cpu_s`` CPU
    seconds were spent (a trial finishes at its cumulative ``cpu_total``)."""
    import numpy as np

    from kdprune.analysis.pareto import hypervolume

    done = [
        t["values"] for t in trials if t["state"] == "COMPLETE" and t["cpu_total"] <= cpu_s + 1e-9
    ]
    k = len(reference_point)
    return hypervolume(np.asarray(done, dtype=float).reshape(-1, k), reference_point)


def summarise(
    runs: Sequence[dict[str, Any]],
    samplers: Sequence[str],
    objectives: Sequence[str],
    reference_point: Sequence[float],
    budget_s: float,
    goal: float = GOAL,
) -> dict[str, Any]:
    """Per sampler: final hypervolume at the budget per seed, mean, sd, the mean ± sd
    hypervolume-vs-CPU curve on a grid of the budget, trial counts and CPU spent; ratios
    of each Optuna sampler's mean final hypervolume to random's (and per seed, paired).
    The headline sampler is the first non-random one given (the product's default)."""
    grid = [budget_s * i / (GRID_POINTS - 1) for i in range(GRID_POINTS)]
    per: dict[str, Any] = {}
    for name in samplers:
        mine = sorted((r for r in runs if r["sampler"] == name), key=lambda r: r["seed"])
        if not mine:  # a partial result: this sampler's first study has not run yet
            continue
        curves = [[hypervolume_at(r["trials"], x, reference_point) for x in grid] for r in mine]
        finals = [c[-1] for c in curves]
        trials = [t for r in mine for t in r["trials"]]
        within = [t for t in trials if t["cpu_total"] <= budget_s + 1e-9]
        per[name] = {
            "seeds": [r["seed"] for r in mine],
            "final_hypervolume": finals,
            "mean": statistics.fmean(finals) if finals else 0.0,
            "sd": _sd(finals),
            "history_mean": [statistics.fmean(s) for s in zip(*curves, strict=True)],
            "history_sd": [_sd(s) for s in zip(*curves, strict=True)],
            "trials": len(trials),
            "trials_within_budget": len(within),
            "complete": sum(t["state"] == "COMPLETE" for t in within),
            "pruned": sum(t["state"] == "PRUNED" for t in within),
            "failed": sum(t["state"] == "FAIL" for t in within),
            "cached": sum(bool(t["cached"]) for t in trials),
            "cpu_s_spent": [r["trials"][-1]["cpu_total"] if r["trials"] else 0.0 for r in mine],
            "mean_cpu_s_full_trial": _mean_full_cost(trials),
        }
    ratios: dict[str, float | None] = {}
    paired: dict[str, list[float | None]] = {}
    base = per.get(RANDOM, {})
    for name in per:
        if name == RANDOM or RANDOM not in per:
            continue
        ratios[name] = per[name]["mean"] / base["mean"] if base["mean"] > 0 else None
        by_seed = dict(zip(base["seeds"], base["final_hypervolume"], strict=True))
        paired[name] = [
            (v / by_seed[s] if by_seed.get(s) else None)
            for s, v in zip(per[name]["seeds"], per[name]["final_hypervolume"], strict=True)
            if s in by_seed
        ]
    headline = next((s for s in samplers if s != RANDOM), None)
    value = ratios.get(headline) if headline else None  # None until both have run
    return {
        "samplers": per,
        "grid_cpu_s": grid,
        "ratios_vs_random": ratios,
        "paired_ratios_vs_random": paired,
        "headline_sampler": headline,
        "value": value,
        "goal": goal,
        "goal_met": value is not None and value >= goal,
    }


def _mean_full_cost(trials: Sequence[dict[str, Any]]) -> float | None:
    """Mean CPU seconds of a trial trained to the end (completed, not replayed)."""
    full = [t["cpu_s"] for t in trials if t["state"] == "COMPLETE" and not t["cached"]]
    return statistics.fmean(full) if full else None


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


def _fmt(v: float | None, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def write_markdown(path: Path, result: dict[str, Any]) -> None:
    d = result["details"]
    s, ref = d["summary"], d["reference_point"]
    box = math.prod(ref)
    head = s["headline_sampler"]
    minutes = d["budget_cpu_s"] / 60
    steps = f", {d['steps']} compression steps" if d["steps"] else ""
    lines = [
        f"# P5: hypervolume at equal compute ({minutes:.3g} CPU-min per study), "
        f"product search vs random ({d['preset']} preset{steps})",
        "",
        *([f"**PARTIAL RESULT: {d['partial']}**", ""] if d.get("partial") else []),
        f"Objectives {', '.join(d['objectives'])} (minimised), reference point "
        f"{', '.join(f'{v:.6g}' for v in ref)}; seeds {' '.join(map(str, d['seeds']))}; "
        "every trial a real `compress` run. Early stopping (the sweep's rung rule): "
        + ", ".join(f"{k} {'on' if v else 'off'}" for k, v in d["early_stopping"].items())
        + f". Compute: {d['compute']}; load average (1, 5, 15 min) at start "
        f"{d['load_start_end'][0]}, end {d['load_start_end'][1]}; wall {d['wall_s'] / 60:.1f} min.",
        "",
        f"**{head}/random = {_fmt(s['value'])}** (goal >= {s['goal']}: "
        f"{'met' if s['goal_met'] else 'not met'}); per seed (paired): "
        + ", ".join(_fmt(v) for v in s["paired_ratios_vs_random"].get(head, [])),
        "",
        "| sampler | final hypervolume (mean ± sd) | ÷ reference box | per seed | ÷ random "
        "| trials in budget: complete / stopped / failed | trials run | replayed | "
        "CPU-min spent per seed | CPU-min per full trial |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, p in s["samplers"].items():
        full = p["mean_cpu_s_full_trial"]
        lines.append(
            f"| {name} | {p['mean']:.6g} ± {p['sd']:.3g} | {p['mean'] / box:.4f} | "
            f"{', '.join(f'{v:.6g}' for v in p['final_hypervolume'])} | "
            f"{_fmt(s['ratios_vs_random'].get(name))} | "
            f"{p['complete']} / {p['pruned']} / {p['failed']} | {p['trials']} | {p['cached']} | "
            f"{', '.join(f'{v / 60:.1f}' for v in p['cpu_s_spent'])} | "
            f"{'-' if full is None else f'{full / 60:.2f}'} |"
        )
    for obj, value in d["constant_objectives"].items():
        lines += [
            "",
            f"Note: {obj} is {value:.6g} in every completed trial, so the hypervolume only "
            "ranks the other objective(s) here.",
        ]
    grid = s["grid_cpu_s"]
    cols = list(range(0, len(grid), 5))
    lines += [
        "",
        "Mean hypervolume after x CPU-min:",
        "",
        "| sampler | " + " | ".join(f"{grid[i] / 60:.3g}" for i in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for name, p in s["samplers"].items():
        lines.append(
            f"| {name} | " + " | ".join(f"{p['history_mean'][i]:.4g}" for i in cols) + " |"
        )
    path.write_text("\n".join(lines) + "\n")


def plot_history(path: Path, result: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = result["details"]
    s = d["summary"]
    x = [v / 60 for v in s["grid_cpu_s"]]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, p in s["samplers"].items():
        mean, sd = p["history_mean"], p["history_sd"]
        seeds = len(p["seeds"])
        stop = " + early stopping" if d["early_stopping"].get(name) else ""
        ax.step(x, mean, where="post", label=f"{name}{stop} ({seeds} seed{'s' * (seeds > 1)})")
        ax.fill_between(
            x, [m - e for m, e in zip(mean, sd, strict=True)],
            [m + e for m, e in zip(mean, sd, strict=True)], alpha=0.2, step="post",
        )  # fmt: skip
    ax.set_xlabel("CPU minutes spent by the study")
    ax.set_ylabel("hypervolume (" + ", ".join(d["objectives"]) + ")")
    ax.set_title(f"P5: hypervolume vs compute, {d['preset']} preset (mean ± sd)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def compact(result: dict[str, Any]) -> dict[str, Any]:
    """The stdout line: per-sampler mean/sd final hypervolume, trial counts and the ratios
    (curves and trials are in the JSON file)."""
    d = result["details"]
    s = d["summary"]
    keys = ("mean", "sd", "final_hypervolume", "trials_within_budget", "complete", "pruned")
    per = {name: {k: p[k] for k in keys} for name, p in s["samplers"].items()}
    details = {k: v for k, v in d.items() if k != "summary"}
    details.update(
        samplers=per,
        ratios_vs_random=s["ratios_vs_random"],
        paired_ratios_vs_random=s["paired_ratios_vs_random"],
    )
    return {**{k: v for k, v in result.items() if k != "details"}, "details": details}
