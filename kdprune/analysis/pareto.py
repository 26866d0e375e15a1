"""Pareto fronts, hypervolume, knee point, per-method fronts and hypervolume history.

Every objective is minimised (WER, parameters, latency). A point *dominates* another when
it is no worse in every objective and strictly better in at least one; exact duplicates
do not dominate each other, so all copies of a non-dominated point stay on the front.
Rows with a missing (NaN) objective never enter a front.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from kdprune.contract import COUNT_METRICS, DEFAULT_OBJECTIVES, KNOBS, METHOD_LABELS, method_knob

# Trial labels (method ± KD) in display order: l0, l0+KD, LRF, LRF+KD, small, ..., dense+KD.
LABEL_ORDER = tuple(f"{name}{kd}" for name in METHOD_LABELS.values() for kd in ("", "+KD"))
BASELINE_LABEL = "small+KD"


def pareto_mask(values: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``values`` (N, K), all minimised.

    Rows containing NaN are never on the front. O(N² K) memory-light loop over rows, fine
    for the thousands of trials a sweep has.
    """
    v = np.asarray(values, dtype=float)
    if v.ndim != 2:
        raise ValueError(f"values must be 2-D (N, K), got shape {v.shape}")
    finite = ~np.isnan(v).any(axis=1)
    mask = finite.copy()
    pts = v[finite]
    idx = np.flatnonzero(finite)
    for i, p in zip(idx, pts, strict=True):
        no_worse = (pts <= p).all(axis=1)
        better = (pts < p).any(axis=1)
        if (no_worse & better).any():
            mask[i] = False
    return mask


def eligible(df: pd.DataFrame) -> pd.DataFrame:
    """Rows that may enter a front: ``eligible`` is True where that column exists."""
    if "eligible" in df.columns:
        return df[df["eligible"].astype(bool)]
    return df


def pareto_front(df: pd.DataFrame, objectives: Sequence[str] = DEFAULT_OBJECTIVES) -> pd.DataFrame:
    """Non-dominated rows of ``df`` for ``objectives`` (all minimised), sorted by the first
    objective then the others. Only eligible rows (see `eligible`) with every objective
    present are considered; the index of ``df`` is kept."""
    objectives = list(objectives)
    missing = [o for o in objectives if o not in df.columns]
    if missing:
        raise KeyError(f"objective column(s) {missing} not in the trials frame")
    cand = eligible(df)
    if not len(cand):
        return cand.copy()
    mask = pareto_mask(cand[objectives].to_numpy(dtype=float))
    return cand[mask].sort_values(objectives, kind="stable").copy()


def _compute_hypervolume():
    try:
        from optuna._hypervolume import compute_hypervolume
    except ImportError:  # older layouts of optuna's private module
        from optuna._hypervolume.wfg import compute_hypervolume
    return compute_hypervolume


def hypervolume(points: np.ndarray | pd.DataFrame, reference_point: Sequence[float]) -> float:
    """Hypervolume dominated by ``points`` (N, K) and bounded by ``reference_point`` (K,),
    all objectives minimised; computed by Optuna's exact WFG implementation.

    Points with NaN, or worse than the reference in any objective, add no volume and are
    dropped (Optuna would refuse them). An empty set has hypervolume 0.
    """
    ref = np.asarray(reference_point, dtype=float)
    pts = np.asarray(points, dtype=float).reshape(-1, ref.shape[0])
    pts = pts[~np.isnan(pts).any(axis=1)]
    pts = pts[(pts <= ref).all(axis=1)]
    if not len(pts):
        return 0.0
    return float(_compute_hypervolume()(pts, ref))


def default_reference_point(
    df: pd.DataFrame, objectives: Sequence[str] = DEFAULT_OBJECTIVES, margin: float = 1.1
) -> tuple[float, ...]:
    """A reference point every finished trial dominates: per objective, the larger of a
    natural bound (WER 1.0; teacher size for ``params``/``encoder_params``, derived from
    ``params_ratio``; 1.0 for ``params_ratio``) and ``margin`` × the worst value seen.

    It depends on the data; for a running sweep fix it once (e.g. from the teacher) so
    hypervolumes stay comparable across steps and samplers.
    """
    cand = eligible(df)
    ref = []
    for obj in objectives:
        vals = pd.to_numeric(cand.get(obj, pd.Series(dtype=float)), errors="coerce").dropna()
        worst = float(vals.max()) * margin if len(vals) else 0.0
        natural = 0.0
        if obj.startswith("wer"):
            natural = 1.0
        elif obj == "params_ratio":
            natural = 1.0
        elif obj in COUNT_METRICS and "params_ratio" in cand:
            ratio = pd.to_numeric(cand["params_ratio"], errors="coerce")
            teacher = (pd.to_numeric(cand[obj], errors="coerce") / ratio).replace(np.inf, np.nan)
            if obj == "params" and teacher.notna().any():
                natural = float(teacher.median())
        ref.append(max(natural, worst) if (natural or worst) else 1.0)
    return tuple(ref)


def knee_point(front: pd.DataFrame, objectives: Sequence[str] = DEFAULT_OBJECTIVES) -> pd.Series:
    """The front's knee: objectives min-max normalised over the front; with two objectives
    the point farthest below the chord joining the two extremes (best trade-off bend),
    with more the point closest to the ideal point. Ties go to the ideal-point distance."""
    if not len(front):
        raise ValueError("empty front has no knee point")
    v = front[list(objectives)].to_numpy(dtype=float)
    lo, hi = v.min(axis=0), v.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    z = (v - lo) / span
    ideal_dist = np.linalg.norm(z, axis=1)
    if z.shape[1] == 2 and len(z) > 2:
        # On a 2-D front sorted by z0, the extremes are (0, 1) and (1, 0) after
        # normalisation; the chord between them is z0 + z1 = 1, the ideal point below it.
        below_chord = (1.0 - z[:, 0] - z[:, 1]) / np.sqrt(2.0)
        order = np.lexsort((ideal_dist, -np.round(below_chord, 12)))
    else:
        order = np.argsort(ideal_dist, kind="stable")
    return front.iloc[int(order[0])]


def method_label(method: object, kd_weight: object) -> str:
    """Display label of a trial: ``l0``, ``l0+KD``, ``LRF``, ``LRF+KD``, ``small+KD``…"""
    missing = method is None or (isinstance(method, float) and np.isnan(method))
    name = "trials" if missing else METHOD_LABELS.get(str(method), str(method))
    try:
        kd = float(kd_weight) > 0
    except (TypeError, ValueError):
        kd = False
    return f"{name}+KD" if kd else name


def add_labels(df: pd.DataFrame) -> pd.DataFrame:
    """Copy of ``df`` with ``kd`` (kd_weight > 0), ``label`` (method±KD) and ``settings``
    (a short human-readable summary of the searched params) columns."""
    out = df.copy()
    kd_w = pd.to_numeric(
        out.get("kd_weight", pd.Series(index=out.index, dtype=float)), errors="coerce"
    )
    out["kd"] = kd_w.fillna(0) > 0
    methods = out.get("method", pd.Series(index=out.index, dtype=object))
    out["label"] = [method_label(m, k) for m, k in zip(methods, kd_w, strict=True)]
    out["settings"] = [_settings(r) for _, r in out.iterrows()]
    return out


def _settings(row: Mapping[str, Any]) -> str:
    """``s=0.5 kd=1 seq stream``: the knob the trial's method searches (s: target
    sparsity, r: rank ratio; both when the method is unknown), KD weight, schedule, mode."""
    parts = []
    method = row.get("method")
    known = isinstance(method, str)
    for key, short in (*zip(KNOBS, ("s", "r"), strict=True), ("kd_weight", "kd")):
        val = row.get(key)
        if val is None or (isinstance(val, float) and np.isnan(val)):
            continue
        if key in KNOBS and known and key != method_knob(method):
            continue
        parts.append(f"{short}={float(val):.3g}")
    if row.get("schedule") == "sequential":
        parts.append("seq")
    if is_true(row.get("streaming")):
        parts.append("stream")
    return " ".join(parts)


def run_name(params: Mapping[str, Any]) -> str:
    """A trial's MLflow run name: its label and settings, e.g. ``l0+KD s=0.67 kd=2 seed=1``
    (``seq`` / ``stream`` for a sequential or streaming trial)."""
    seed = params.get("seed")
    name = f"{method_label(params.get('method'), params.get('kd_weight'))} {_settings(params)}"
    return name + (f" seed={int(seed)}" if seed is not None and seed == seed else "")


def row_label(params: Mapping[str, Any]) -> str:
    """A method-table row: the label, then ``sequential`` and ``streaming`` when they apply
    (``l0+KD``, ``l0+KD sequential``, ``small+KD streaming``)."""
    label = method_label(params.get("method"), params.get("kd_weight"))
    if params.get("schedule") == "sequential":
        label += " sequential"
    if is_true(params.get("streaming")):
        label += " streaming"
    return label


def is_true(value: object) -> bool:
    """Truthiness of a param value that may be None, NaN, a bool or a numpy bool."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return False
    return bool(value)


def label_sort_key(label: str) -> tuple[int, str]:
    """Order labels as in the paper's tables, unknown ones last."""
    base = label.split(" (")[0]
    return (LABEL_ORDER.index(base) if base in LABEL_ORDER else len(LABEL_ORDER), label)


def fronts_by(
    df: pd.DataFrame,
    objectives: Sequence[str] = DEFAULT_OBJECTIVES,
    by: str | Sequence[str] = "label",
) -> dict[str, pd.DataFrame]:
    """Pareto front of each group of trials (e.g. l0 vs LRF, KD on/off with ``by="label"``;
    ``by=("label", "schedule")`` for joint vs sequential; ``by=("label", "streaming")``).
    Keys are the group values joined with " / "; groups with no finished trial are left out."""
    df = add_labels(df) if "label" not in df.columns else df
    keys = [by] if isinstance(by, str) else list(by)
    out: dict[str, pd.DataFrame] = {}
    for vals, grp in df.groupby(keys, dropna=False, sort=False):
        vals = vals if isinstance(vals, tuple) else (vals,)
        name = " / ".join(_group_value(k, v) for k, v in zip(keys, vals, strict=True))
        front = pareto_front(grp, objectives)
        if len(front):
            out[name] = front
    return dict(sorted(out.items(), key=lambda kv: label_sort_key(kv[0])))


def _group_value(key: str, value: object) -> str:
    if key == "streaming":
        return "streaming" if is_true(value) else "non-streaming"
    return str(value)


def hypervolume_history(
    df: pd.DataFrame, objectives: Sequence[str], reference_point: Sequence[float]
) -> pd.DataFrame:
    """Hypervolume of the finished trials among the first n, for n = 1..N in start order
    (failed and early-stopped trials count towards n but add nothing): the curve to
    compare samplers at equal trial budgets. Columns trial_index, run_id, hypervolume."""
    order = df.sort_values(["start_time", "run_id"]) if "start_time" in df else df
    ok = (
        order["eligible"].astype(bool).to_numpy()
        if "eligible" in order
        else np.ones(len(order), dtype=bool)
    )
    vals = order[list(objectives)].to_numpy(dtype=float)
    front = np.empty((0, len(objectives)))
    hv, rows = 0.0, []
    for i, (v, good) in enumerate(zip(vals, ok, strict=True)):
        if good and not np.isnan(v).any():
            cand = np.vstack([front, v])
            front = cand[pareto_mask(cand)]
            hv = hypervolume(front, reference_point)
        rows.append({"trial_index": i + 1, "run_id": order["run_id"].iloc[i], "hypervolume": hv})
    return pd.DataFrame(rows, columns=["trial_index", "run_id", "hypervolume"])
