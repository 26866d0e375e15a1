"""The method table of a fixed-grid sweep from a real sqlite MLflow store holding a made-up
grid (tests/fakes.py `make_synthetic_grid`): rows' mean ± sd over seeds, every ΔWER with a
paired bootstrap interval read back from the children's per-utterance artefacts, and the
report built on it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from fakes import GRID_ROWS, make_synthetic_grid
from mlflow import MlflowClient

from kdprune.analysis.bootstrap import compare_pooled, pool_seeds
from kdprune.analysis.loading import load_trials
from kdprune.analysis.method_table import (
    comparisons,
    load_method_table,
    mlflow_utterances,
    with_rows,
)
from kdprune.analysis.report import write_report

# True WERs per row: l0+KD clearly beats the baseline; l0+KD and LRF+KD are equal (the
# difference must not be significant); streaming rows are worse.
WERS = {
    "l0": 0.16,
    "l0+KD": 0.10,
    "LRF": 0.17,
    "LRF+KD": 0.10,
    "small+KD": 0.15,
    "l0+KD sequential": 0.12,
    "l0+KD streaming": 0.14,
    "LRF+KD streaming": 0.13,
    "small+KD streaming": 0.20,
}
ROWS = list(WERS)


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    made = make_synthetic_grid(uri, "method_table", WERS)
    return uri, made


def test_rows_are_means_and_sds_over_seeds(grid):
    uri, made = grid
    table = load_method_table("method_table", uri)
    assert table is not None and table.parent_run_id == made["parent_run_id"]
    assert list(table.rows["row"]) == ROWS  # the paper's order, streaming rows last
    df = with_rows(load_trials("method_table", uri))
    for r in table.rows.to_dict("records"):
        runs = df[df["row"] == r["row"]]
        assert r["seeds"] == 3 and r["seed_list"] == "0,1,2"
        for m in ("wer_dev", "wer_test", "achieved_sparsity"):
            assert r[m] == pytest.approx(runs[m].mean())
            assert r[f"{m}_sd"] == pytest.approx(runs[m].std(ddof=1))
        assert r["params"] == pytest.approx(runs["params"].mean())
        assert abs(r["wer_test"] - WERS[r["row"]]) < 0.02


def test_every_difference_the_paper_needs_is_there(grid):
    uri, _ = grid
    pairs = {(k, a, b) for k, a, b in comparisons(with_rows(load_trials("method_table", uri)))}
    base = "small+KD"
    expected = {("vs baseline", r, base) for r in ("l0", "l0+KD", "LRF", "LRF+KD")}
    expected |= {("vs baseline", "l0+KD sequential", base)}
    expected |= {
        ("vs baseline", f"{m} streaming", "small+KD streaming") for m in ("l0+KD", "LRF+KD")
    }
    expected |= {("KD vs no KD", "l0+KD", "l0"), ("KD vs no KD", "LRF+KD", "LRF")}
    expected |= {("joint vs sequential", "l0+KD", "l0+KD sequential")}
    expected |= {("l0 vs LRF", "l0", "LRF"), ("l0 vs LRF", "l0+KD", "LRF+KD")}
    expected |= {("l0 vs LRF", "l0+KD streaming", "LRF+KD streaming")}
    assert pairs == expected


def test_intervals_are_the_paired_bootstrap_of_the_logged_utterances(grid, tmp_path):
    uri, made = grid
    table = load_method_table("method_table", uri)
    d = table.deltas.set_index(["comparison", "a", "b", "split"])
    assert len(table.deltas) == 2 * 13 and d["utterances"].eq(200).all()

    big = d.loc[("vs baseline", "l0+KD", "small+KD", "test")]
    assert big["significant"] and big["high"] < 0 and big["delta"] == pytest.approx(-0.05, abs=0.02)
    same = d.loc[("l0 vs LRF", "l0+KD", "LRF+KD", "test")]
    assert not same["significant"] and same["low"] < 0 < same["high"]

    # The interval is `compare_pooled` of the artefacts as logged, seeds pooled per utterance.
    load = mlflow_utterances(MlflowClient(uri), tmp_path)
    pooled = {
        row: pool_seeds([load(r, "test") for r in made["runs"][row]])
        for row in ("l0+KD", "small+KD")
    }
    direct = compare_pooled(pooled["l0+KD"], pooled["small+KD"])
    assert (big["low"], big["high"], big["delta"]) == pytest.approx(
        (direct.low, direct.high, direct.delta)
    )
    # The pooled Δ is the mean of the per-seed Δs of the runs' own WER metrics.
    seeds = [float(x) / 100 for x in big["seed_deltas"].split()]
    assert len(seeds) == 3 and np.mean(seeds) == pytest.approx(big["delta"], abs=1e-4)
    assert big["seed_sd"] == pytest.approx(np.std(seeds, ddof=1), abs=1e-4)


def test_without_per_utterance_results_the_table_says_so(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    make_synthetic_grid(uri, "old", WERS, seeds=(0, 1), utterances=False)
    table = load_method_table("old", uri)
    assert table.deltas["low"].isna().all() and table.deltas["significant"].isna().all()
    assert any("no per-utterance results" in n for n in table.notes)
    assert table.deltas["seed_sd"].notna().all()  # the seed spread needs no utterances


def test_report_of_a_grid_sweep_has_the_method_table(grid, tmp_path):
    uri, _ = grid
    result = write_report("method_table", uri, tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Method table" in md and "### Differences" in md
    assert "## Paper comparison at matched parameter budgets" not in md
    for row in ROWS:
        assert f"| {row} | 3 |" in md
    assert "| l0 vs LRF | l0+KD | LRF+KD | test |" in md and "**yes**, A better" in md
    rows = pd.read_csv(result["method_table_csv"])
    deltas = pd.read_csv(result["method_deltas_csv"])
    assert list(rows["row"]) == ROWS and len(deltas) == 26
    assert json.loads(json.dumps(result["method_deltas"]))  # JSON-able (NaN -> null)
    assert "### Knee vs the nearest-size run" in md and len(result["knee_deltas"]) == 2


def test_report_of_a_search_sweep_has_no_method_table(tmp_path):
    from fakes import make_synthetic_sweep

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    make_synthetic_sweep(uri, "search", 20, seed=3)
    result = write_report("search", uri, tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Method table" not in md and "## Paper comparison" in md
    assert "method_table_csv" not in result
    # no per-utterance artefacts in this fake: the knee comparison has no interval
    assert all(d["low"] is None for d in result.get("knee_deltas", []))


def test_a_later_grid_run_fills_cells_of_the_same_set_up_only(tmp_path):
    """`sweeps/method_table.py --rows ... --seeds ...` fills a missing cell: the table pools
    grid runs of one set-up (newest run per row and seed), never one at another budget."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rows = tuple(r for r in GRID_ROWS if r.get("schedule") != "sequential")
    first = make_synthetic_grid(uri, "mt", WERS, rows=rows)
    seq = ({"method": "l0", "kd_weight": 1.0, "schedule": "sequential"},)
    fill = make_synthetic_grid(uri, "mt", WERS, rows=seq)
    table = load_method_table("mt", uri)
    assert table.parent_run_ids == [fill["parent_run_id"], first["parent_run_id"]]
    counts = dict(zip(table.rows["row"], table.rows["seeds"], strict=True))
    assert counts["l0+KD sequential"] == 3 and counts["l0+KD"] == 3
    assert any("Cells from 2 grid sweep runs" in n for n in table.notes)
    joint = table.deltas.set_index(["comparison", "split"]).loc[("joint vs sequential", "test")]
    assert joint["utterances"] == 200 and not np.isnan(joint["low"])

    other = make_synthetic_grid(uri, "mt", WERS, rows=seq, seeds=(0,), budget=0.7)
    table = load_method_table("mt", uri)  # the newest run is at another budget: alone
    assert table.parent_run_ids == [other["parent_run_id"]]
    assert list(table.rows["row"]) == ["l0+KD sequential"]
    assert any("2 other run(s)" in n for n in table.notes)


def test_rows_flag_picks_rows_by_report_label_and_refuses_unknown_ones():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "sweeps" / "method_table.py"
    spec = importlib.util.spec_from_file_location("method_table_sweep", path)
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    points = sweep.grid(0.5, 0.33, [0, 2], ["sequential"], ["L0+KD  sequential"])
    assert [(p["method"], p["schedule"], p["seed"]) for p in points] == [
        ("l0", "sequential", 0),
        ("l0", "sequential", 2),
    ]
    assert len(sweep.grid(0.5, 0.33, [0], ["sequential"])) == 6
    with pytest.raises(SystemExit, match="unknown row"):
        sweep.grid(0.5, 0.33, [0], [], ["l0+KD sequential"])  # needs --extra sequential
