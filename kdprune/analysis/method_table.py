"""The method table of a fixed-grid sweep (`sweeps/method_table.py`), from MLflow: each
row's mean ± sd over seeds, and every ΔWER between rows with a paired bootstrap interval.

Rows are trial configurations without their seed: the label (``l0+KD``) plus
``sequential`` / ``streaming`` when they apply (`pareto.row_label`). Per row: the number
of seeds, WER dev/test mean ± sd over seeds, parameters, encoder parameters and achieved
sparsity (mean ± sd), the target sparsity or rank ratio.

Differences, Δ = WER(A) − WER(B) (negative: A better), on dev and test:

- every row vs the small+KD baseline of its mode (streaming rows vs small+KD streaming);
- KD vs no KD (l0+KD vs l0, LRF+KD vs LRF);
- joint vs sequential (l0+KD vs l0+KD sequential);
- l0 vs LRF at the same KD, schedule and mode (the paper's l0+KD-best / LRF+KD-best claims).

Each Δ gets a paired bootstrap 95 % interval over utterances (`kdprune.analysis.bootstrap`:
each row's seeds pooled per utterance, 1000 resamples, fixed seed), read from the
children's per-utterance artefacts, and the seed spread: the two rows' WER difference at
each seed both have, its sd and range. A Δ is significant when its interval excludes 0.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from kdprune.analysis.bootstrap import RESAMPLES, SEED, PairedDelta, compare_pooled, pool_seeds
from kdprune.analysis.pareto import BASELINE_LABEL, is_true, label_sort_key, row_label
from kdprune.analysis.utterances import (
    UtteranceLoader,
    Utterances,
    mlflow_utterances,
)
from kdprune.contract import (
    COUNT_METRICS,
    EVAL_SPLITS,
    KNOBS,
    SWEEP_GRID,
    TAG_SWEEP_KIND,
    resolve_tracking_uri,
)

SPREAD = ("wer_dev", "wer_test", "achieved_sparsity")  # reported as mean ± sd
MEANS = COUNT_METRICS  # reported as the mean over seeds
COMPARISONS = ("vs baseline", "KD vs no KD", "joint vs sequential", "l0 vs LRF")


@dataclass(frozen=True)
class MethodTable:
    """``rows``: one per row (means, ``<metric>_sd``, seeds, run ids); ``deltas``: one
    per comparison and split (fractions, not %); ``notes``: what is missing or assumed."""

    rows: pd.DataFrame
    deltas: pd.DataFrame
    parent_run_id: str | None = None
    notes: list[str] = field(default_factory=list)
    parent_run_ids: list[str] = field(default_factory=list)  # every grid run pooled, newest first


def with_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Finished trials with a ``row`` column; one run per (row, seed): the latest."""
    df = df[df["eligible"].astype(bool)] if "eligible" in df.columns else df
    df = df.copy()
    df["row"] = [row_label(r) for r in df.to_dict("records")]
    order = df.sort_values("start_time") if "start_time" in df.columns else df
    return order.drop_duplicates(["row", "seed"], keep="last")


def _row_key(row: str) -> tuple:
    streaming, sequential = row.endswith(" streaming"), " sequential" in row
    base = row.replace(" streaming", "").replace(" sequential", "")
    return (streaming, sequential, label_sort_key(base))


def row_stats(df: pd.DataFrame) -> pd.DataFrame:
    """One line per row: seeds, mean and sd over seeds, knobs, run ids."""
    lines = []
    for row, grp in df.groupby("row", sort=False):
        grp = grp.sort_values("seed")
        line: dict[str, Any] = {"row": row, "seeds": len(grp)}
        for m in SPREAD:
            v = pd.to_numeric(grp[m], errors="coerce")
            line[m], line[f"{m}_sd"] = (
                float(v.mean()),
                float(v.std(ddof=1)) if len(v) > 1 else np.nan,
            )
        for m in MEANS:
            line[m] = float(pd.to_numeric(grp[m], errors="coerce").mean())
        for k in (*KNOBS, "kd_weight"):
            vals = pd.to_numeric(grp[k], errors="coerce").dropna().unique()
            line[k] = float(vals[0]) if len(vals) == 1 else np.nan
        line["seed_list"] = ",".join(str(int(s)) for s in grp["seed"].dropna())
        line["runs"] = ",".join(grp["run_id"])
        lines.append(line)
    out = pd.DataFrame(lines)
    if len(out):
        out = out.iloc[sorted(range(len(out)), key=lambda i: _row_key(out["row"].iloc[i]))]
    return out.reset_index(drop=True)


def comparisons(df: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(kind, row A, row B) for every difference the table reports (module docstring)."""
    first = df.drop_duplicates("row").to_dict("records")
    info = {
        r["row"]: (
            r["method"],
            float(r.get("kd_weight") or 0.0),
            r.get("schedule") or "joint",
            is_true(r.get("streaming")),
        )
        for r in first
    }

    def find(method, kd, schedule, streaming) -> str | None:
        hits = [n for n, v in info.items() if v == (method, kd, schedule, streaming)]
        return hits[0] if hits else None

    out = []
    for row in sorted(info, key=_row_key):
        method, kd, schedule, streaming = info[row]
        base = [n for n, v in info.items() if v[0] == "small" and v[1] > 0 and v[2] == "joint"
                and v[3] == streaming]  # fmt: skip
        if method != "small" and base:
            out.append(("vs baseline", row, base[0]))
        if kd > 0 and (no_kd := find(method, 0.0, schedule, streaming)):
            out.append(("KD vs no KD", row, no_kd))
        if schedule == "sequential" and (joint := find(method, kd, "joint", streaming)):
            out.append(("joint vs sequential", joint, row))
        if method == "l0" and (lrf := find("lrf", kd, schedule, streaming)):
            out.append(("l0 vs LRF", row, lrf))
    return out


def pooled(runs: Sequence[str], split: str, load: UtteranceLoader) -> Utterances | None:
    """The runs' per-utterance errors pooled over seeds, or None when one has none."""
    per_run = [load(r, split) for r in runs]
    if not per_run or any(u is None for u in per_run):
        return None
    return pool_seeds(per_run)  # type: ignore[arg-type]


def delta_row(
    kind: str,
    a: pd.DataFrame,
    b: pd.DataFrame,
    split: str,
    load: UtteranceLoader,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> dict[str, Any]:
    """One reported difference: rows ``a`` and ``b`` (their runs, one per seed) on ``split``."""
    metric = f"wer_{split}"
    name_a, name_b = str(a["row"].iloc[0]), str(b["row"].iloc[0])
    wa, wb = float(a[metric].mean()), float(b[metric].mean())
    by_seed = pd.merge(a[["seed", metric]], b[["seed", metric]], on="seed", suffixes=("_a", "_b"))
    seed_d = (by_seed[f"{metric}_a"] - by_seed[f"{metric}_b"]).to_numpy(dtype=float)
    line: dict[str, Any] = {
        "comparison": kind,
        "a": name_a,
        "b": name_b,
        "split": split,
        "wer_a": wa,
        "wer_b": wb,
        "delta": wa - wb,
        "seed_deltas": " ".join(f"{100 * d:+.2f}" for d in seed_d),
        "seed_sd": float(np.std(seed_d, ddof=1)) if len(seed_d) > 1 else np.nan,
        "seed_min": float(seed_d.min()) if len(seed_d) else np.nan,
        "seed_max": float(seed_d.max()) if len(seed_d) else np.nan,
        "seeds_a": len(a),
        "seeds_b": len(b),
        "note": "",
    }
    try:
        pa, pb = pooled(list(a["run_id"]), split, load), pooled(list(b["run_id"]), split, load)
        if pa is None or pb is None:
            raise ValueError("no per-utterance results")
        d: PairedDelta = compare_pooled(pa, pb, resamples=resamples, seed=seed)
    except ValueError as exc:
        line.update({k: np.nan for k in ("low", "high", "relative", "rel_low", "rel_high")})
        line.update(p_better=np.nan, utterances=0, significant=None, note=str(exc))
        return line
    line.update(
        delta=d.delta,  # the pooled corpus Δ (equal to the mean Δ when all seeds are paired)
        low=d.low,
        high=d.high,
        relative=d.relative,
        rel_low=d.rel_low,
        rel_high=d.rel_high,
        p_better=d.p_better,
        utterances=d.num_utterances,
        significant=d.significant,
    )
    return line


def method_table(
    df: pd.DataFrame,
    load: UtteranceLoader,
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    parent_run_id: str | None = None,
) -> MethodTable:
    """The table of a grid sweep's trials (a `load_trials` frame of one sweep run)."""
    df = with_rows(df)
    notes: list[str] = []
    if not len(df):
        return MethodTable(pd.DataFrame(), pd.DataFrame(), parent_run_id, ["no finished trials"])
    rows = row_stats(df)
    deltas = [
        delta_row(kind, df[df["row"] == a], df[df["row"] == b], split, load, resamples, seed)
        for kind, a, b in comparisons(df)
        for split in EVAL_SPLITS
    ]
    out = pd.DataFrame(deltas)
    if len(out):  # grouped by kind of comparison, rows in table order within each
        out = out.sort_values("comparison", key=lambda c: c.map(COMPARISONS.index), kind="stable")
        out = out.reset_index(drop=True)
    if len(out) and (out["note"] != "").any():
        notes.append(
            "Some differences have no interval: "
            + "; ".join(sorted(set(out.loc[out["note"] != "", "note"])))
        )
    if not any(r.startswith(BASELINE_LABEL) for r in rows["row"]):
        notes.append("No small+KD baseline row: no differences vs the baseline.")
    return MethodTable(rows, out, parent_run_id, notes)


GRID_SAME = ("preset", "steps", "teacher_dir", "data")  # parent params pooled runs share


def grid_parents(client: Any, df: pd.DataFrame) -> list[str]:
    """The fixed-grid parent runs among ``df``'s whose cells make one table, newest first:
    the newest grid run, and every older one with the same preset, steps, teacher and data
    (parent params) and the same budget (its children's target sparsity and rank ratio).
    A later run that fills missing cells (``sweeps/method_table.py --rows ... --seeds ...``)
    or reruns some thus joins the table; a run at another budget or on another teacher
    does not."""
    grids = []
    for pid in df["parent_run_id"].dropna().unique() if "parent_run_id" in df else []:
        run = client.get_run(pid)
        if run.data.tags.get(TAG_SWEEP_KIND) == SWEEP_GRID:
            grids.append((run.info.start_time, pid, {k: run.data.params.get(k) for k in GRID_SAME}))
    if not grids:
        return []
    grids.sort(key=lambda g: g[0], reverse=True)

    def knob_values(pids: list[str]) -> dict[str, set]:
        sub = df[df["parent_run_id"].isin(pids)]
        return {
            k: {round(float(v), 6) for v in pd.to_numeric(sub[k], errors="coerce").dropna()}
            if k in sub
            else set()
            for k in KNOBS  # one value each across pooled cells
        }

    _, newest, same = grids[0]
    chosen = [newest]
    for _, pid, params in grids[1:]:
        if params == same and all(len(v) <= 1 for v in knob_values([*chosen, pid]).values()):
            chosen.append(pid)
    return chosen


def load_method_table(
    experiment: str,
    tracking_uri: str | None = None,
    df: pd.DataFrame | None = None,
    **kw: Any,
) -> MethodTable | None:
    """The method table of the experiment's newest fixed-grid sweep run, with the cells of
    older grid runs of the same set-up (`grid_parents`; per row and seed the newest
    finished run), or None when it has no grid run. ``df``: its `load_trials` frame, when
    already loaded."""
    from mlflow import MlflowClient

    from kdprune.analysis.loading import load_trials

    uri = resolve_tracking_uri(tracking_uri)
    df = load_trials(experiment, uri) if df is None else df
    client = MlflowClient(tracking_uri=uri)
    parents = grid_parents(client, df) if len(df) else []
    if not parents:
        return None
    with tempfile.TemporaryDirectory(prefix="kdprune-utts-") as tmp:
        sub = df[df["parent_run_id"].isin(parents)]
        load = mlflow_utterances(client, tmp)
        table = method_table(sub, load, parent_run_id=parents[0], **kw)
    table.parent_run_ids[:] = parents
    if len(parents) > 1 and len(table.rows):
        cells = with_rows(sub)["parent_run_id"].value_counts()
        table.notes.append(
            f"Cells from {len(parents)} grid sweep runs of one set-up (same preset, steps, "
            "teacher, data and budget; per row and seed the newest finished run): "
            + ", ".join(f"`{p}` ({int(cells.get(p, 0))} cells)" for p in parents)
            + "."
        )
    others = df["parent_run_id"].nunique() - len(parents)
    if others:
        table.notes.append(
            f"{others} other run(s) of this experiment (another set-up, or not a grid "
            "sweep) left out."
        )
    return table


# -- Markdown ------------------------------------------------------------------------------
def _pct(v: float, sd: float | None = None, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    s = f"{100 * v:+.2f}" if signed else f"{100 * v:.2f}"
    return s + (f" ± {100 * sd:.2f}" if sd is not None and sd == sd else "")


def _count(v: float) -> str:
    return "–" if v != v else f"{v / 1e6:.3f}M" if abs(v) >= 1e6 else f"{v / 1e3:.1f}k"


def rows_markdown(rows: pd.DataFrame) -> str:
    """The rows as a Markdown table (WER and sparsity in %, mean ± sd over seeds)."""
    head = ("| row | seeds | WER dev % | WER test % | params | encoder params | "
            "sparsity % (target) |\n|---|---|---|---|---|---|---|")  # fmt: skip
    lines = [head]
    for r in rows.to_dict("records"):
        target = r.get("target_sparsity")
        knob = f"s={target:.2f}" if target == target else f"r={r.get('rank_ratio', np.nan):.3f}"
        lines.append(
            f"| {r['row']} | {r['seeds']} | {_pct(r['wer_dev'], r['wer_dev_sd'])} | "
            f"{_pct(r['wer_test'], r['wer_test_sd'])} | {_count(r['params'])} | "
            f"{_count(r['encoder_params'])} | "
            f"{_pct(r['achieved_sparsity'], r['achieved_sparsity_sd'])} ({knob}) |"
        )
    return "\n".join(lines) + "\n"


def verdict(significant: Any, delta: float) -> str:
    if significant is None or (isinstance(significant, float) and math.isnan(significant)):
        return "n/a"
    if not significant:
        return "no"
    return "**yes**, A better" if delta < 0 else "**yes**, B better"


def deltas_markdown(deltas: pd.DataFrame, splits: Sequence[str] = EVAL_SPLITS) -> str:
    """The differences as a Markdown table (percentage points; relative change in %)."""
    head = ("| comparison | A | B | split | WER A % | WER B % | ΔWER (points) [95 % CI] | "
            "relative [95 % CI] | per-seed Δ (sd) | significant |\n"
            "|---|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    lines = [head]
    for d in deltas[deltas["split"].isin(splits)].to_dict("records") if len(deltas) else []:
        ci = (f" [{_pct(d['low'], signed=True)}, {_pct(d['high'], signed=True)}]"
              if d["low"] == d["low"] else "")  # fmt: skip
        rel = (f"{100 * d['relative']:+.1f} % [{100 * d['rel_low']:+.1f}, "
               f"{100 * d['rel_high']:+.1f}]" if d["relative"] == d["relative"] else "–")  # fmt: skip
        sd = f" ({100 * d['seed_sd']:.2f})" if d["seed_sd"] == d["seed_sd"] else ""
        lines.append(
            f"| {d['comparison']} | {d['a']} | {d['b']} | {d['split']} | {_pct(d['wer_a'])} | "
            f"{_pct(d['wer_b'])} | {_pct(d['delta'], signed=True)}{ci} | {rel} | "
            f"{d['seed_deltas'] or '–'}{sd} | {verdict(d['significant'], d['delta'])} |"
        )
    return "\n".join(lines) + "\n"


def markdown(table: MethodTable) -> str:
    """The method table section of a report."""
    n = int(table.deltas["utterances"].max()) if len(table.deltas) else 0
    return "\n".join(
        [
            rows_markdown(table.rows),
            "WER and sparsity: mean ± sd over seeds; params: mean over seeds.",
            "",
            "### Differences",
            "",
            "Δ = WER(A) − WER(B) in percentage points (negative: A better). Interval: paired "
            f"bootstrap 95 % over {n} utterances, each row's seeds pooled per utterance "
            f"(mean errors over seeds), {RESAMPLES} resamples, fixed seed; significant when it "
            "excludes 0. Per-seed Δ: A − B at each seed both have, with its sd.",
            "",
            deltas_markdown(table.deltas),
            *(f"- {note}" for note in table.notes),
            "",
        ]
    )


def knee_deltas(df: pd.DataFrame, knee: pd.Series, load: UtteranceLoader) -> pd.DataFrame:
    """The Pareto report's knee comparison: the knee run vs the small+KD run nearest to it
    in parameters (vs the nearest run of another label when the knee is small+KD), on dev
    and test, with the same paired bootstrap intervals (single runs, no pooling)."""
    from kdprune.analysis.pareto import add_labels

    ok = add_labels(df[df["eligible"].astype(bool)] if "eligible" in df else df)
    ok = ok[ok["run_id"] != knee["run_id"]]
    is_base = ok["label"] == BASELINE_LABEL
    others = ok[~is_base] if knee["label"] == BASELINE_LABEL else ok[is_base]
    if not len(others):
        return pd.DataFrame()
    i = int(np.argmin(np.abs(others["params"].to_numpy(dtype=float) - float(knee["params"]))))
    partner = others.iloc[[i]].copy()
    a = pd.DataFrame([knee]).copy()
    a["row"] = f"knee: {knee['label']} {knee['settings']}"
    partner["row"] = f"{partner['label'].iloc[0]} {partner['settings'].iloc[0]}"
    return pd.DataFrame(
        [delta_row("knee vs nearest-size", a, partner, s, load) for s in EVAL_SPLITS]
    )
