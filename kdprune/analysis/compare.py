"""The paper-comparison table: each method at matched parameter budgets vs the small+KD baseline.

Rows are the method labels (l0, l0+KD, LRF, LRF+KD, small, small+KD, dense), and when the
sweep has them, the same labels split by schedule (joint vs sequential) and by streaming
mode. Budgets are the parameter counts of the small+KD baseline's front. A method's value
at a budget is read off its own (wer_dev, params) front — selection on dev, test reported
for the same runs — and the ``match`` column says how:

- ``exact``: a front run within ``rel_tol`` of the budget;
- ``interpolated``: linear in params between the two front runs around the budget;
- ``largest below budget``: the whole front is smaller than the budget; its largest run;
- ``n/a: smallest …``: every run is bigger than the budget (no value);
- ``uncompressed reference``: dense rows, shown at their own size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from kdprune.analysis.pareto import (
    BASELINE_LABEL,
    add_labels,
    is_true,
    knee_point,
    label_sort_key,
    pareto_front,
)
from kdprune.contract import COMPRESSING_METHODS, DEFAULT_OBJECTIVES, LATENCY

MATCH_OBJECTIVES = DEFAULT_OBJECTIVES  # (wer_dev, params): methods are matched on size
VALUE_COLUMNS = ("params", "wer_dev", "wer_test", LATENCY)
TABLE_COLUMNS = (
    "section",
    "row",
    "budget",
    *VALUE_COLUMNS,
    "rel_wer_dev",
    "rel_wer_test",
    "match",
    "runs",
)


@dataclass(frozen=True)
class BudgetValue:
    """A method's metrics at one parameter budget (see module docstring for ``match``)."""

    params: float
    wer_dev: float
    wer_test: float
    latency_ms_per_audio_s: float
    match: str
    run_ids: tuple[str, ...]


@dataclass(frozen=True)
class PaperComparison:
    """The table (columns ``TABLE_COLUMNS``, relative changes as fractions), the budgets
    used, and notes on how they were chosen and what is missing."""

    table: pd.DataFrame
    budgets: tuple[float, ...]
    notes: list[str] = field(default_factory=list)


def _val(row: pd.Series, col: str) -> float:
    v = row.get(col)
    return float(v) if v is not None and pd.notna(v) else float("nan")


def _at(row: pd.Series, match: str) -> BudgetValue:
    return BudgetValue(*(_val(row, c) for c in VALUE_COLUMNS), match, (str(row["run_id"]),))


def value_at_budget(front: pd.DataFrame, budget: float, rel_tol: float = 0.02) -> BudgetValue:
    """Metrics of a (wer_dev, params) front at ``budget`` parameters."""
    f = front.sort_values(["params", "wer_dev"], kind="stable")
    if not len(f):
        nan = float("nan")
        return BudgetValue(nan, nan, nan, nan, "n/a: no finished runs", ())
    p = f["params"].to_numpy(dtype=float)
    near = np.abs(p - budget) <= rel_tol * budget
    if near.any():
        i = int(np.argmin(np.where(near, f["wer_dev"].to_numpy(dtype=float), np.inf)))
        return _at(f.iloc[i], "exact")
    below, above = np.flatnonzero(p < budget), np.flatnonzero(p > budget)
    if not len(below):
        nan = float("nan")
        return BudgetValue(nan, nan, nan, nan, f"n/a: smallest run {p.min() / 1e6:.3g}M params", ())
    lo = f.iloc[int(below[-1])]
    if not len(above):
        return _at(lo, "largest below budget")
    hi = f.iloc[int(above[0])]
    t = (budget - lo["params"]) / (hi["params"] - lo["params"])
    vals = [(1 - t) * _val(lo, c) + t * _val(hi, c) for c in VALUE_COLUMNS[1:]]
    return BudgetValue(float(budget), *vals, "interpolated", (str(lo["run_id"]), str(hi["run_id"])))


def _pick_budgets(values: np.ndarray, max_budgets: int) -> tuple[float, ...]:
    values = np.unique(values[~np.isnan(values)])
    if len(values) > max_budgets:
        values = values[np.round(np.linspace(0, len(values) - 1, max_budgets)).astype(int)]
    return tuple(float(v) for v in values)


def _rows(
    section: str,
    groups: dict[str, pd.DataFrame],
    baseline: pd.DataFrame | None,
    budgets: Sequence[float],
    rel_tol: float,
) -> list[dict]:
    rows = []
    for budget in budgets:
        base = value_at_budget(baseline, budget, rel_tol) if baseline is not None else None
        for name in sorted(groups, key=label_sort_key):
            front = pareto_front(groups[name], MATCH_OBJECTIVES)
            if name.startswith("dense") and len(front):
                v = _at(front.iloc[0], "uncompressed reference")
            else:
                v = value_at_budget(front, budget, rel_tol)
            rel = {}
            for metric in ("wer_dev", "wer_test"):
                b = getattr(base, metric) if base is not None else float("nan")
                rel[f"rel_{metric}"] = (getattr(v, metric) - b) / b if b and b == b else np.nan
            rows.append(
                {
                    "section": section,
                    "row": name,
                    "budget": float(budget),
                    **{c: getattr(v, c) for c in VALUE_COLUMNS},
                    **rel,
                    "match": v.match,
                    "runs": ", ".join(r[:8] for r in v.run_ids),
                }
            )
    return rows


def _split(
    df: pd.DataFrame, key: str, labels: Sequence[str] | None = None
) -> dict[str, pd.DataFrame]:
    out = {}
    for (label, value), grp in df.groupby(["label", key], dropna=False, sort=False):
        if labels is not None and label not in labels:
            continue
        if key == "streaming":
            value = "streaming" if is_true(value) else "non-streaming"
        out[f"{label} ({value})"] = grp
    return out


def paper_comparison(
    df: pd.DataFrame,
    budgets: Sequence[float] | None = None,
    rel_tol: float = 0.02,
    max_budgets: int = 3,
) -> PaperComparison:
    """The paper-comparison table of a sweep's trials (a frame from `load_trials`)."""
    df = add_labels(df) if "label" not in df.columns else df
    df = df[df["eligible"].astype(bool)] if "eligible" in df.columns else df
    notes: list[str] = []
    if not len(df):
        return PaperComparison(pd.DataFrame(columns=TABLE_COLUMNS), (), ["no finished trials"])
    streaming = df["streaming"].map(is_true) if "streaming" in df else pd.Series(False, df.index)
    both_modes = streaming.nunique() > 1
    main = df[~streaming] if both_modes else df
    if both_modes:
        notes.append("Methods section: non-streaming runs only (streaming compared below).")
    base_main = main[main["label"] == BASELINE_LABEL]
    if budgets is None:
        if len(base_main):
            front = pareto_front(base_main, MATCH_OBJECTIVES)
            budgets = _pick_budgets(front["params"].to_numpy(dtype=float), max_budgets)
            notes.append("Budgets: parameter counts of the small+KD baseline's front.")
        else:
            knee = knee_point(pareto_front(main, MATCH_OBJECTIVES), MATCH_OBJECTIVES)
            budgets = (float(knee["params"]),)
            notes.append("Budget: the knee of the overall front (no small+KD baseline run).")
    if not len(base_main):
        notes.append("No small+KD baseline (method small, kd_weight > 0): relative change n/a.")
    baseline = base_main if len(base_main) else None
    groups = {label: grp for label, grp in main.groupby("label", sort=False)}
    rows = _rows("methods", groups, baseline, budgets, rel_tol)
    compressed = main[main["method"].isin(COMPRESSING_METHODS)]
    if compressed["schedule"].nunique(dropna=True) > 1:
        rows += _rows("schedule", _split(compressed, "schedule"), baseline, budgets, rel_tol)
    if both_modes:
        for mode, sub in df.groupby(streaming, sort=True):
            base = sub[sub["label"] == BASELINE_LABEL]
            if not len(base):
                notes.append(f"No small+KD baseline with streaming={mode}: relative change n/a.")
            grp = _split(sub, "streaming")
            rows += _rows("streaming", grp, base if len(base) else None, budgets, rel_tol)
    if any(r["match"] == "interpolated" for r in rows):
        notes.append(
            "'interpolated': no run within "
            f"{rel_tol:.0%} of the budget; values are linear in params between the two "
            "front runs around it (an estimate, not a trained model)."
        )
    if any(r["match"] == "largest below budget" for r in rows):
        notes.append(
            "'largest below budget': the method has no run that large; its largest front "
            "run is shown at its own (smaller) size, so the comparison favours the baseline."
        )
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    return PaperComparison(table, tuple(float(b) for b in budgets), notes)
