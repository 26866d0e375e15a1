"""Reporting of the search benchmark P5 (bench/search.py): the summary over samplers and
seeds, the markdown tables, the hypervolume plot and the compact stdout line."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RANDOM = "random"
GOAL = 1.1


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
