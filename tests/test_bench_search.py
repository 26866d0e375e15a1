"""bench/search.py (P5) on the tiny preset: 2 real trials x 1 seed x 2 samplers; what the
files say agrees with itself and with the stdout line."""

from __future__ import annotations

import importlib.util
import json
import statistics
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_search", REPO / "bench" / "search.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_search_benchmark_outputs_are_consistent(
    bench, tiny_workdir, tiny_teacher, tmp_path, capsys
):
    # A generous reference point, so that 4-step students add volume.
    ref = (5.0, 2.0 * tiny_teacher["params"])
    kw = dict(trials=2, seeds=[0], samplers=["nsga2", "random"], workdir=tiny_workdir, steps=4)
    result = bench.run_benchmark(
        **kw, out_dir=tmp_path / "a", teacher_dir=tiny_teacher["model_dir"], reference_point=ref
    )
    files = result["details"]["files"]
    saved = json.loads(Path(files["json"]).read_text())
    assert saved["measure"] == "P5" and saved["goal"] == 1.1
    assert saved["details"]["reference_point"] == list(ref)
    assert saved["details"]["objectives"] == ["wer_dev", "params"]
    finals = {}
    for run in saved["runs"]:
        hist = run["hypervolume_history"]
        assert len(hist) == len(run["trials"]) == 2
        assert all(b >= a for a, b in zip(hist, hist[1:], strict=False))  # non-decreasing
        assert run["final_hypervolume"] == hist[-1]
        assert len({json.dumps(t["params"], sort_keys=True) for t in run["trials"]}) == 2
        for t in run["trials"]:
            assert t["state"] == "COMPLETE"
            # The trained student is the config the sampler proposed.
            trained = json.loads((Path(t["model_dir"]) / "config.json").read_text())
            for key, value in t["params"].items():
                assert trained["extra"]["compress"][key] == value, key
        finals[run["sampler"]] = run["final_hypervolume"]
    assert finals["random"] > 0
    # The ratio is the one the per-run finals give.
    ratio = finals["nsga2"] / finals["random"]
    assert saved["value"] == pytest.approx(ratio)
    assert saved["details"]["summary"]["ratios_vs_random"]["nsga2"] == pytest.approx(ratio)
    assert saved["goal_met"] == (ratio >= 1.1)
    # NSGA-II's first generation draws from the same seeded random stream: paired trials.
    by = {r["sampler"]: r["trials"] for r in saved["runs"]}
    assert by["nsga2"][0]["params"] == by["random"][0]["params"]
    md = Path(files["markdown"]).read_text()
    assert "| nsga2 |" in md and "| random |" in md
    assert Path(files["plot"]).stat().st_size > 1000

    # The CLI on the same settings: every trial is now cached; the last stdout line agrees.
    capsys.readouterr()
    argv = ["--trials", "2", "--seeds", "0", "--samplers", "nsga2", "random", "--steps", "4"]
    argv += ["--workdir", str(tiny_workdir), "--teacher", tiny_teacher["model_dir"]]
    argv += ["--out", str(tmp_path / "b"), "--reference-point", ",".join(map(str, ref))]
    assert bench.main(argv) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"measure", "value", "goal", "goal_met", "unit", "device", "details"} <= set(line)
    assert line["value"] == pytest.approx(ratio)
    per = line["details"]["samplers"]
    assert per["random"]["mean"] == pytest.approx(finals["random"])
    assert per["nsga2"]["sd"] == 0.0  # one seed
    again = json.loads((tmp_path / "b" / "search.json").read_text())
    assert all(t["cached"] for r in again["runs"] for t in r["trials"])
    assert statistics.fmean(per["nsga2"]["final_hypervolume"]) == pytest.approx(finals["nsga2"])
