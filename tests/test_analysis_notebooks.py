"""Both analysis notebooks run top to bottom (nbclient) against a small real MLflow store,
pointed at it through MLFLOW_TRACKING_URI and KDPRUNE_EXPERIMENT."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from fakes import make_synthetic_grid, make_synthetic_sweep, synthetic_store
from nbclient import NotebookClient

from kdprune.analysis.loading import load_trials
from kdprune.analysis.pareto import pareto_front

ANALYSIS = Path(__file__).resolve().parent.parent / "analysis"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    uri = synthetic_store(
        tmp_path_factory.mktemp("mlflow"), "nb_sweep", 24, seed=7, n_failed=1,
        n_stopped_early=1, schedules=("joint", "sequential"),
    )  # fmt: skip
    make_synthetic_sweep(uri, "other_sweep", 4, seed=8)  # the notebooks must pick nb_sweep
    return uri


def run_notebook(name: str, monkeypatch, uri: str, experiment: str = "nb_sweep") -> list:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("KDPRUNE_EXPERIMENT", experiment)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(ANALYSIS / name, as_version=4)
    NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ANALYSIS)}}
    ).execute()
    return nb.cells


def texts(cells) -> str:
    """All text outputs of the executed cells (stdout, plain and Markdown results)."""
    parts = []
    for cell in cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(out["text"])
            data = out.get("data", {})
            parts += [data.get(k, "") for k in ("text/plain", "text/markdown")]
    return "\n".join(parts)


def images(cells) -> int:
    return sum(
        "image/png" in out.get("data", {}) for cell in cells for out in cell.get("outputs", [])
    )


def test_notebooks_take_their_source_from_one_cell():
    for name in ("pareto.ipynb", "paper_comparison.ipynb"):
        nb = nbformat.read(ANALYSIS / name, as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1
        src = tagged[0].source
        assert "MLFLOW_TRACKING_URI" in src and "KDPRUNE_EXPERIMENT" in src


def test_pareto_notebook_runs_and_prints_the_front(store, monkeypatch):
    cells = run_notebook("pareto.ipynb", monkeypatch, store)
    out = texts(cells)
    assert f"tracking URI: {store}" in out and "experiment:   nb_sweep" in out
    front = pareto_front(load_trials("nb_sweep", store), ("wer_dev", "params"))
    assert f"Pareto front: {len(front)} of 24 finished trials" in out
    for trial_id in front["trial_id"]:
        assert trial_id in out
    assert "hypervolume:" in out and "knee:" in out
    assert "by label and schedule:" in out
    assert images(cells) >= 3  # WER vs params, WER vs latency, hypervolume history


def test_paper_comparison_notebook_runs_and_shows_the_table(store, monkeypatch):
    cells = run_notebook("paper_comparison.ipynb", monkeypatch, store)
    out = texts(cells)
    assert "budgets (params):" in out
    assert "### methods at" in out and "### schedule at" in out
    for row in ("| l0+KD", "| LRF+KD", "| small+KD"):
        assert row in out
    assert "ΔWER dev vs small+KD" in out
    assert "'nb_sweep' is a search sweep, not a fixed grid: no method table" in out
    assert images(cells) >= 1


def test_paper_comparison_notebook_shows_a_grid_sweeps_method_table(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    wers = {"l0": 0.2, "l0+KD": 0.1, "LRF": 0.2, "LRF+KD": 0.12, "small+KD": 0.15}
    rows = ({"method": "l0", "kd_weight": 0.0}, {"method": "l0", "kd_weight": 1.0},
            {"method": "lrf", "kd_weight": 0.0}, {"method": "lrf", "kd_weight": 1.0},
            {"method": "small", "kd_weight": 1.0})  # fmt: skip
    make_synthetic_grid(uri, "grid", wers, seeds=(0, 1), rows=rows, n_utts=60)
    out = texts(run_notebook("paper_comparison.ipynb", monkeypatch, uri, "grid"))
    assert "### Differences" in out and "| l0+KD | 2 |" in out
    assert "| vs baseline | l0+KD | small+KD | test |" in out and "95 % CI" in out
