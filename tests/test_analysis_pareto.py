"""Dominance filter, pareto.hypervolume, knee, per-method fronts, history and budget matching,
checked against brute force on random sets (no MLflow here)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from kdprune.analysis import compare, pareto


def brute_force_front(v: np.ndarray) -> np.ndarray:
    n = len(v)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        if np.isnan(v[i]).any():
            keep[i] = False
            continue
        for j in range(n):
            if j != i and not np.isnan(v[j]).any():
                if all(v[j] <= v[i]) and any(v[j] < v[i]):
                    keep[i] = False
                    break
    return keep


def inclusion_exclusion_hv(pts: np.ndarray, ref: np.ndarray) -> float:
    """Volume of the union of boxes [p, ref] by inclusion–exclusion over all subsets."""
    total = 0.0
    for k in range(1, len(pts) + 1):
        for sub in itertools.combinations(range(len(pts)), k):
            corner = pts[list(sub)].max(axis=0)
            total += (-1) ** (k + 1) * float(np.prod(np.clip(ref - corner, 0, None)))
    return total


def grid_hv(pts: np.ndarray, ref: np.ndarray) -> float:
    """Count the unit cells dominated by at least one integer point (integer coordinates)."""
    axes = [np.arange(0, int(r)) for r in ref]
    cells = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(ref))
    covered = np.zeros(len(cells), dtype=bool)
    for p in pts:
        covered |= (cells >= p).all(axis=1)
    return float(covered.sum())


@pytest.mark.parametrize("k", [2, 3, 4])
def test_pareto_mask_matches_brute_force_with_ties_and_duplicates(k):
    rng = np.random.default_rng(k)
    for trial in range(60):
        n = int(rng.integers(1, 40))
        # few distinct values per axis -> many ties and exact duplicates
        v = rng.integers(0, 5, size=(n, k)).astype(float)
        if trial % 3 == 0 and n > 2:
            v[rng.integers(0, n)] = np.nan
        if n > 3:
            v[1] = v[0]  # a guaranteed duplicate
        np.testing.assert_array_equal(pareto.pareto_mask(v), brute_force_front(v))


def test_duplicates_of_a_front_point_all_stay_and_ties_are_dominated():
    v = np.array([[1.0, 2.0], [1.0, 2.0], [1.0, 3.0], [2.0, 1.0], [3.0, 1.0]])
    assert pareto.pareto_mask(v).tolist() == [True, True, False, True, False]


def test_pareto_front_uses_only_eligible_rows_and_sorts():
    df = pd.DataFrame(
        {
            "run_id": list("abcde"),
            "wer_dev": [0.2, 0.1, 0.3, 0.05, np.nan],
            "params": [2.0, 3.0, 1.0, 0.5, 0.1],
            "eligible": [True, True, True, False, True],
        }
    )
    front = pareto.pareto_front(df, ("wer_dev", "params"))
    assert front["run_id"].tolist() == ["b", "a", "c"]  # d not eligible, e has NaN WER
    with pytest.raises(KeyError):
        pareto.pareto_front(df, ("wer_dev", "latency_ms_per_audio_s"))


@pytest.mark.parametrize("k", [2, 3, 4])
def test_hypervolume_matches_inclusion_exclusion(k):
    rng = np.random.default_rng(10 + k)
    for _ in range(25):
        n = int(rng.integers(1, 9))
        pts = rng.uniform(0, 1, size=(n, k))
        if n > 2:
            pts[1] = pts[0]
        ref = np.full(k, 1.2)
        assert pareto.hypervolume(pts, ref) == pytest.approx(
            inclusion_exclusion_hv(pts, ref), rel=1e-9
        )


@pytest.mark.parametrize("k", [2, 3])
def test_hypervolume_matches_grid_count_on_integer_points(k):
    rng = np.random.default_rng(20 + k)
    ref = np.full(k, 12.0)
    for _ in range(15):
        pts = rng.integers(0, 12, size=(int(rng.integers(1, 25)), k)).astype(float)
        assert pareto.hypervolume(pts, ref) == pytest.approx(grid_hv(pts, ref))


def test_hypervolume_ignores_points_beyond_reference_and_nan():
    ref = (1.0, 1.0)
    assert pareto.hypervolume(np.empty((0, 2)), ref) == 0.0
    assert pareto.hypervolume([[2.0, 0.1]], ref) == 0.0
    pts = np.array([[0.5, 0.5], [1.5, 0.0], [np.nan, 0.1]])
    assert pareto.hypervolume(pts, ref) == pytest.approx(0.25)


def test_default_reference_point_dominated_by_all_finished_trials():
    df = pd.DataFrame(
        {
            "wer_dev": [0.3, 1.4, 0.2],
            "params": [2e6, 3e6, 4e6],
            "params_ratio": [0.4, 0.6, 0.8],
            "eligible": [True, True, True],
        }
    )
    wer_ref, params_ref = pareto.default_reference_point(df, ("wer_dev", "params"))
    assert wer_ref == pytest.approx(1.4 * 1.1)  # above the natural bound 1.0
    assert params_ref == pytest.approx(5e6)  # the teacher: params / params_ratio


def test_knee_point_on_a_convex_front():
    x = np.array([0.0, 0.1, 0.2, 0.5, 1.0])
    y = np.array([1.0, 0.4, 0.25, 0.1, 0.0])
    front = pd.DataFrame({"wer_dev": y, "params": x, "run_id": list("abcde")})
    assert pareto.knee_point(front, ("wer_dev", "params"))["run_id"] == "c"
    assert pareto.knee_point(front.iloc[[3]], ("wer_dev", "params"))["run_id"] == "d"
    with pytest.raises(ValueError):
        pareto.knee_point(front.iloc[:0])


def test_labels_and_per_method_fronts():
    assert pareto.method_label("l0", 0.0) == "l0"
    assert pareto.method_label("lrf", "0.5") == "LRF+KD"
    assert pareto.method_label("small", 1.0) == "small+KD"
    assert pareto.method_label("none", None) == "dense"
    assert pareto.method_label(None, float("nan")) == "trials"  # a frame without params
    df = pd.DataFrame(
        {
            "run_id": list("abcdef"),
            "method": ["l0", "l0", "lrf", "lrf", "l0", "small"],
            "kd_weight": [0.0, 1.0, 0.0, 1.0, 1.0, 1.0],
            "target_sparsity": [0.5, 0.5, None, None, 0.7, None],
            "rank_ratio": [None, None, 0.2, 0.3, None, None],
            "schedule": ["joint", "joint", "joint", "sequential", "sequential", "joint"],
            "streaming": [False] * 6,
            "wer_dev": [0.3, 0.2, 0.35, 0.25, 0.22, 0.3],
            "params": [2.0, 2.0, 2.5, 3.0, 1.5, 2.0],
            "eligible": [True] * 6,
        }
    )
    fronts = pareto.fronts_by(df, ("wer_dev", "params"))
    assert list(fronts) == ["l0", "l0+KD", "LRF", "LRF+KD", "small+KD"]
    assert sorted(fronts["l0+KD"]["run_id"]) == ["b", "e"]
    by_schedule = pareto.fronts_by(df, ("wer_dev", "params"), by=("label", "schedule"))
    assert "l0+KD / sequential" in by_schedule and "l0+KD / joint" in by_schedule
    labelled = pareto.add_labels(df)
    assert labelled.loc[0, "settings"] == "s=0.5 kd=0"
    assert labelled.loc[3, "settings"] == "r=0.3 kd=1 seq"


def test_hypervolume_history_is_monotone_and_ends_at_full_hypervolume():
    rng = np.random.default_rng(0)
    n = 30
    df = pd.DataFrame(
        {
            "run_id": [f"r{i}" for i in range(n)],
            "start_time": pd.date_range("2026-01-01", periods=n, freq="min"),
            "wer_dev": rng.uniform(0.1, 0.9, n),
            "params": rng.uniform(1e6, 5e6, n),
            "eligible": rng.uniform(size=n) > 0.2,
        }
    )
    ref = (1.0, 6e6)
    hist = pareto.hypervolume_history(df, ("wer_dev", "params"), ref)
    assert hist["trial_index"].tolist() == list(range(1, n + 1))
    assert (np.diff(hist["hypervolume"]) >= 0).all()
    ok = df[df["eligible"]]
    assert hist["hypervolume"].iloc[-1] == pytest.approx(
        pareto.hypervolume(ok[["wer_dev", "params"]].to_numpy(), ref)
    )


def _front(points, ids=None) -> pd.DataFrame:
    p = np.array(points, dtype=float)
    return pd.DataFrame(
        {
            "run_id": ids or [f"r{i}" for i in range(len(p))],
            "params": p[:, 0],
            "wer_dev": p[:, 1],
            "wer_test": p[:, 1] + 0.01,
            "latency_ms_per_audio_s": p[:, 0] / 1e5,
        }
    )


def test_value_at_budget_exact_interpolated_and_out_of_range():
    front = _front([(1e6, 0.4), (2e6, 0.3), (4e6, 0.2)])
    exact = compare.value_at_budget(front, 2.01e6)
    assert exact.match == "exact" and exact.wer_dev == pytest.approx(0.3)
    mid = compare.value_at_budget(front, 3e6)
    assert mid.match == "interpolated"
    assert mid.params == 3e6 and mid.wer_dev == pytest.approx(0.25)
    assert mid.wer_test == pytest.approx(0.26) and mid.run_ids == ("r1", "r2")
    above = compare.value_at_budget(front, 8e6)
    assert above.match == "largest below budget" and above.wer_dev == pytest.approx(0.2)
    below = compare.value_at_budget(front, 0.5e6)
    assert below.match.startswith("n/a") and np.isnan(below.wer_dev)


def test_paper_comparison_relative_change_at_matched_budget():
    rows = [
        # method, kd, params, wer
        ("small", 1.0, 2e6, 0.30),
        ("l0", 1.0, 1e6, 0.35),
        ("l0", 1.0, 3e6, 0.21),  # -> 0.28 interpolated at 2e6
        ("l0", 0.0, 2e6, 0.33),
        ("lrf", 1.0, 2.02e6, 0.31),  # exact within 2 %
        ("none", 0.0, 5e6, 0.12),
    ]
    df = pd.DataFrame(
        {
            "run_id": [f"r{i}" for i in range(len(rows))],
            "method": [r[0] for r in rows],
            "kd_weight": [r[1] for r in rows],
            "params": [r[2] for r in rows],
            "wer_dev": [r[3] for r in rows],
            "wer_test": [r[3] for r in rows],
            "latency_ms_per_audio_s": [r[2] / 1e5 for r in rows],
            "schedule": ["joint"] * len(rows),
            "streaming": [False] * len(rows),
            "eligible": [True] * len(rows),
        }
    )
    comp = compare.paper_comparison(df)
    assert comp.budgets == (2e6,)
    t = comp.table.set_index("row")
    assert set(t["section"]) == {"methods"}
    assert t.loc["l0+KD", "match"] == "interpolated"
    assert t.loc["l0+KD", "wer_dev"] == pytest.approx(0.28)
    assert t.loc["l0+KD", "rel_wer_dev"] == pytest.approx((0.28 - 0.30) / 0.30)
    assert t.loc["LRF+KD", "match"] == "exact"
    assert t.loc["l0", "rel_wer_dev"] == pytest.approx(0.1)
    assert t.loc["small+KD", "rel_wer_dev"] == pytest.approx(0.0)
    assert t.loc["dense", "match"] == "uncompressed reference"
    assert any("interpolated" in n for n in comp.notes)

    no_base = compare.paper_comparison(df[df["method"] != "small"])
    assert no_base.table["rel_wer_dev"].isna().all()
    assert any("No small+KD baseline" in n for n in no_base.notes)
