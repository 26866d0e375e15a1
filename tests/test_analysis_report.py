"""`write_report` on real MLflow stores: a normal sweep, an empty one, a failed-only one."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from fakes import make_synthetic_sweep, synthetic_store
from mlflow import MlflowClient

from kdprune.analysis.loading import load_trials
from kdprune.analysis.pareto import pareto_front
from kdprune.analysis.report import write_report


@pytest.fixture(scope="module")
def uri(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    uri = synthetic_store(
        root, "sweep", 36, seed=4, n_failed=2, n_stopped_early=2,
        schedules=("joint", "sequential"), streaming=(False, True),
    )  # fmt: skip
    make_synthetic_sweep(uri, "failed_only", 0, seed=5, n_failed=3)
    MlflowClient(tracking_uri=uri).create_experiment("empty", (root / "empty").as_uri())
    return uri


def test_report_on_a_sweep_writes_files_and_tables(uri, tmp_path):
    out = tmp_path / "report"
    result = write_report("sweep", uri, out)
    json.dumps(result)  # JSON-able, for the CLI's last stdout line
    assert result["status"] == "ok"
    assert result["num_runs"] == 40 and result["num_finished"] == 36
    for key in ("report", "pareto_csv", "plots_html", "paper_comparison_csv"):
        path = out / result[key].split("/")[-1]
        assert path.exists() and path.stat().st_size > 0, key
    assert set(result["plots_png"]) == {
        "wer_dev_vs_params",
        "wer_dev_vs_latency_ms_per_audio_s",
        "hypervolume_history",
    }
    for png in result["plots_png"].values():
        with open(png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"

    df = load_trials("sweep", uri)
    front = pareto_front(df, ("wer_dev", "params"))
    csv = pd.read_csv(result["pareto_csv"])
    assert sorted(csv["run_id"]) == sorted(front["run_id"])
    assert result["front_size"] == len(front) > 0
    assert 0 < result["hypervolume_normalized"] < 1
    assert result["knee"]["run_id"] in set(front["run_id"])

    md = (out / "report.md").read_text()
    assert "## Pareto front (wer_dev, params)" in md
    assert "## Paper comparison at matched parameter budgets" in md
    assert "### methods at" in md and "### schedule at" in md and "### streaming at" in md
    assert "| l0+KD" in md and "| small+KD" in md
    assert "Synthetic runs" in md
    assert "## Trials left out of the fronts" in md and "stopped_early" in md
    for rid in front["run_id"]:
        assert rid in md
    assert json.loads((out / "report.json").read_text())["front_size"] == len(front)

    comp = pd.read_csv(result["paper_comparison_csv"])
    assert {"l0+KD", "LRF+KD", "small+KD"} <= set(comp["row"])
    base = comp[comp["row"] == "small+KD"]
    assert (base["rel_wer_dev"].abs() < 1e-12).all()


def test_report_with_three_objectives(uri, tmp_path):
    objectives = ("wer_dev", "params", "latency_ms_per_audio_s")
    result = write_report("sweep", uri, tmp_path, objectives=objectives)
    assert result["status"] == "ok" and len(result["reference_point"]) == 3
    df = load_trials("sweep", uri)
    assert result["front_size"] == len(pareto_front(df, objectives))


def test_report_on_empty_experiment_says_so(uri, tmp_path):
    result = write_report("empty", uri, tmp_path)
    assert result["status"] == "empty" and result["num_runs"] == 0
    assert "no trial runs" in result["message"]
    assert "no trial runs" in (tmp_path / "report.md").read_text()
    assert not (tmp_path / "pareto.csv").exists()


def test_report_on_failed_only_experiment_says_so(uri, tmp_path):
    result = write_report("failed_only", uri, tmp_path)
    assert result["status"] == "no_finished_trials"
    assert "no finished trials" in result["message"] and "3 failed" in result["message"]
    md = (tmp_path / "report.md").read_text()
    assert "no finished trials" in md and md.count("| failed |") == 3


def test_report_on_missing_experiment_raises_clearly(uri, tmp_path):
    with pytest.raises(ValueError, match="'nope' not found"):
        write_report("nope", uri, tmp_path)


def test_report_uses_the_reference_point_the_sweep_logged(tmp_path):
    """A sweep's parent run holds its fixed reference point: the report's hypervolume is
    computed there (the same number the sweep logged), not at a data-dependent point."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ids = make_synthetic_sweep(uri, "one", 12, seed=7)
    client = MlflowClient(tracking_uri=uri)
    client.log_param(ids["parent_run_id"], "objectives", "['wer_dev', 'params']")
    client.log_param(ids["parent_run_id"], "reference_point", "[1.0, 5000000.0]")
    logged = write_report("one", uri, tmp_path / "a")
    assert "params ≤ 5.000M" in (tmp_path / "a" / "report.md").read_text()
    other = write_report("one", uri, tmp_path / "b", reference_point=(1.0, 6e6))
    assert other["hypervolume"] > logged["hypervolume"] > 0
