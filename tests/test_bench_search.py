"""bench/search.py (P5) on the tiny preset: studies at equal CPU budget, the product's
early stopping applied in-process, and the cost ledger that charges a replayed run what it
cost; what the files say agrees with itself and with the stdout line."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_search", REPO / "bench" / "search.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_replay_charges_the_cost_up_to_the_stopping_rung(tmp_path):
    sys.path.insert(0, str(REPO / "bench"))
    from search_budget import Ledger, replay

    from kdprune.orchestration.early_stop import RungRecords, StoppingRule

    ledger = Ledger(tmp_path / "ledger.json")
    rungs = [[10, [0.5, 100.0], 3.0], [20, [0.4, 100.0], 6.0]]
    ledger.put("k", {"wer_dev": 0.3, "params": 100}, 9.0, rungs)
    entry = Ledger(tmp_path / "ledger.json").get("k")  # persisted
    assert replay(entry, "t", None).cpu_s == 9.0  # no early stopping: the full cost
    records = RungRecords(StoppingRule(eta=2.0, min_peers=2))
    for peer in ("a", "b"):  # two peers better at rung 10 in both objectives
        records.decide(peer, 10, [0.1, 50.0])
    cost = replay(entry, "t", records)
    assert (cost.stopped_at, cost.cpu_s, cost.cached) == (10, 3.0, True)
    assert cost.tune_result() == {"final": True, "stopped_early": True}
    free = replay(entry, "u", RungRecords(StoppingRule()))  # no peers: never stopped
    assert (free.stopped_at, free.cpu_s, free.result["wer_dev"]) == (None, 9.0, 0.3)
    # A stopped run: replayed when stopped again at its rung, trained when not.
    ledger.put("s", None, 3.0, rungs[:1])
    assert replay(ledger.get("s"), "v", records).cpu_s == 3.0
    assert replay(ledger.get("s"), "w", None) is None


def test_search_benchmark_at_equal_compute(bench, tiny_workdir, tiny_teacher, tmp_path, capsys):
    from search_report import hypervolume_at

    ref = (5.0, 2.0 * tiny_teacher["params"])  # generous: 4-step students add volume
    kw = dict(seeds=[0], samplers=["nsga2", "random"], workdir=tiny_workdir, steps=4)
    result = bench.run_benchmark(
        **kw, budget_s=1e6, max_trials=3, out_dir=tmp_path / "a",
        teacher_dir=tiny_teacher["model_dir"], reference_point=ref,
    )  # fmt: skip
    saved = json.loads(Path(result["details"]["files"]["json"]).read_text())
    assert saved["measure"] == "P5" and saved["goal"] == 1.1 and not saved["details"]["partial"]
    assert saved["details"]["early_stopping"] == {"nsga2": True, "random": False}
    runs = {r["sampler"]: r for r in saved["runs"]}
    for run in runs.values():
        trials = run["trials"]
        assert len(trials) == 3
        total = 0.0
        for t in trials:
            assert t["cpu_s"] > 0
            total += t["cpu_s"]
            assert t["cpu_total"] == pytest.approx(total, abs=0.05)
            if t["state"] == "PRUNED":  # stopped at a rung: cheaper than its full run
                assert run["early_stopping"] and t["stopped_at"] is not None
            if t["state"] == "COMPLETE":  # the trained student is the proposed config
                trained = json.loads((Path(t["model_dir"]) / "config.json").read_text())
                for key, value in t["params"].items():
                    assert trained["extra"]["compress"][key] == value, key
    assert all(t["state"] == "COMPLETE" for t in runs["random"]["trials"])  # never stopped
    # The seeded start-up trials are shared: random replays nsga2's run, at nsga2's cost.
    first_n, first_r = runs["nsga2"]["trials"][0], runs["random"]["trials"][0]
    assert first_n["params"] == first_r["params"] and first_r["cached"]
    assert first_r["cpu_s"] == pytest.approx(first_n["cpu_s"], abs=0.01)
    finals = {
        s: hypervolume_at(r["trials"], 1e6, ref) for s, r in runs.items()
    }  # every completed trial is within this budget
    assert finals["random"] > 0
    assert saved["value"] == pytest.approx(finals["nsga2"] / finals["random"])
    assert saved["goal_met"] == (saved["value"] >= 1.1)
    md = Path(result["details"]["files"]["markdown"]).read_text()
    assert "| nsga2 |" in md and "| random |" in md and "PARTIAL" not in md
    assert Path(result["details"]["files"]["plot"]).stat().st_size > 1000

    # The CLI at a budget that ends each study inside its 2nd trial: every run is now in
    # the ledger, replayed at its recorded cost, so the same trials come back, and the
    # final hypervolume counts only the trials finished within the budget.
    budget = (runs["random"]["trials"][0]["cpu_total"] + 0.5 * first_r["cpu_s"]) / 60
    capsys.readouterr()
    argv = ["--budget-min", str(budget), "--seeds", "0", "--samplers", "nsga2", "random"]
    argv += ["--steps", "4", "--workdir", str(tiny_workdir), "--teacher", tiny_teacher["model_dir"]]
    argv += ["--out", str(tmp_path / "b"), "--reference-point", ",".join(map(str, ref))]
    assert bench.main(argv) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"measure", "value", "goal", "goal_met", "unit", "device", "details"} <= set(line)
    again = {
        r["sampler"]: r for r in json.loads((tmp_path / "b" / "search.json").read_text())["runs"]
    }
    rand = again["random"]["trials"]
    assert len(rand) == 2 and all(t["cached"] for t in rand)  # asked while spent < budget
    assert [t["params"] for t in rand] == [t["params"] for t in runs["random"]["trials"][:2]]
    assert rand[1]["cpu_total"] > 60 * budget  # the 2nd trial ends past the budget ...
    want = hypervolume_at(rand[:1], 60 * budget, ref)  # ... so only the 1st one counts
    assert line["details"]["samplers"]["random"]["final_hypervolume"] == [pytest.approx(want)]
    assert line["details"]["samplers"]["random"]["trials_within_budget"] == 1


def test_front_ends_start_is_asked_first(bench):
    import optuna

    from kdprune.orchestration.config import SpaceConfig
    from kdprune.orchestration.space import SearchSpace

    space = SpaceConfig(methods=("l0", "lrf"), kd_weights=(0.0, 1.0))
    points = bench.front_ends(space)
    # The smallest model of each method first, then the largest; inside the ranges.
    assert [(p["method"], p["kd_weight"]) for p in points] == [
        ("l0", 1.0), ("lrf", 1.0), ("l0", 1.0), ("lrf", 1.0)
    ]  # fmt: skip
    assert points[0]["target_sparsity"] > points[2]["target_sparsity"]
    assert points[1]["rank_ratio"] < points[3]["rank_ratio"]
    study = optuna.create_study(
        directions=["minimize"] * 2, sampler=bench.make_bench_sampler("nsga2+ends", 0)
    )
    for p in points:
        study.enqueue_trial(p)
    define = SearchSpace(space, "tiny")
    for p in points:  # the define-by-run space takes the enqueued values
        trial = study.ask()
        define(trial)
        assert trial.params == p
        study.tell(trial, [1.0, 1.0])
