"""Loading a sweep from a real MLflow sqlite store (DESIGN §3 layout) and logging the front
to the parent run."""

from __future__ import annotations

import numpy as np
import pytest
from fakes import make_synthetic_sweep
from mlflow import MlflowClient

from kdprune.analysis.loading import list_sweeps, load_trials
from kdprune.analysis.pareto import hypervolume, pareto_front
from kdprune.analysis.tracking_front import log_front_to_parent
from kdprune.contract import FINAL_METRICS, PARAM_TYPES


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One store: 'big' with 120 finished + 2 failed + 3 early-stopped trials, and
    'two_sweeps' with two parent runs."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    big = make_synthetic_sweep(uri, "big", 120, seed=1, n_failed=2, n_stopped_early=3)
    first = make_synthetic_sweep(uri, "two_sweeps", 5, seed=2)
    second = make_synthetic_sweep(uri, "two_sweeps", 7, seed=3)
    return {"uri": uri, "root": root, "big": big, "first": first, "second": second}


def test_loader_paginates_past_100_runs_and_types_columns(store):
    df = load_trials("big", store["uri"])  # default page size 100: two pages
    assert len(df) == 125
    assert set(df["run_id"]) == set(store["big"]["run_ids"])
    small_pages = load_trials("big", store["uri"], page_size=7)
    assert sorted(small_pages["run_id"]) == sorted(df["run_id"])
    for col in (*PARAM_TYPES, *FINAL_METRICS, "trial_id", "parent_run_id", "state", "eligible"):
        assert col in df.columns, col
    assert (df["parent_run_id"] == store["big"]["parent_run_id"]).all()
    assert df["trial_id"].notna().all() and df["trial_id"].is_unique
    assert df["kd_weight"].dtype == float and df["wer_dev"].dtype == float
    assert set(df["streaming"]) == {False}
    assert df["start_time"].is_monotonic_increasing


def test_loader_flags_failed_and_early_stopped_runs(store):
    df = load_trials("big", store["uri"])
    assert df["state"].value_counts().to_dict() == {
        "finished": 120,
        "stopped_early": 3,
        "failed": 2,
    }
    assert df["eligible"].sum() == 120
    assert set(df.loc[df["state"] == "failed", "status"]) == {"FAILED"}
    assert df.loc[df["state"] == "stopped_early", "stopped_early"].all()
    front = pareto_front(df, ("wer_dev", "params"))
    assert front["state"].eq("finished").all()


def test_loader_selects_one_sweep_by_parent(store):
    both = load_trials("two_sweeps", store["uri"])
    one = load_trials("two_sweeps", store["uri"], parent_run_id=store["second"]["parent_run_id"])
    assert len(both) == 12 and len(one) == 7
    assert set(one["run_id"]) == set(store["second"]["run_ids"])
    sweeps = list_sweeps(store["uri"])
    assert set(sweeps["experiment"]) == {"big", "two_sweeps"}
    assert len(sweeps) == 3


def test_loader_says_clearly_when_store_or_experiment_is_missing(store, tmp_path):
    with pytest.raises(ValueError, match="not found.*experiments there"):
        load_trials("no_such_sweep", store["uri"])
    missing = f"sqlite:///{tmp_path / 'nothing.db'}"
    with pytest.raises(ValueError, match="no MLflow store"):
        load_trials("big", missing)
    assert not (tmp_path / "nothing.db").exists()  # and it did not create one


def test_log_front_to_parent_writes_artifacts_and_hypervolume(store):
    uri, pid = store["uri"], store["first"]["parent_run_id"]
    client = MlflowClient(tracking_uri=uri)
    df = load_trials("two_sweeps", uri, parent_run_id=pid)
    ref = (1.0, 6e6)
    summary = None
    for step in (3, len(df)):  # as trials finish: a prefix, then all
        summary = log_front_to_parent(
            client, pid, df.iloc[:step], ("wer_dev", "params"), ref, step=step
        )
    names = {a.path for a in client.list_artifacts(pid)}
    assert {"pareto.csv", "pareto.html", "pareto_wer_dev_vs_params.png"} <= names
    assert "hypervolume_history.png" in names
    history = client.get_metric_history(pid, "hypervolume")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == [3, len(df)]
    front = pareto_front(df, ("wer_dev", "params"))
    expected = hypervolume(front[["wer_dev", "params"]].to_numpy(), ref)
    assert summary["hypervolume"] == pytest.approx(expected)
    assert max(m.value for m in history) == pytest.approx(expected)
    assert sorted(summary["front_run_ids"]) == sorted(front["run_id"])

    local = client.download_artifacts(pid, "pareto.csv", str(store["root"] / "dl"))
    import pandas as pd

    csv = pd.read_csv(local)
    for col in ("run_id", "trial_id", "method", "wer_dev", "params", "kd_weight"):
        assert col in csv.columns
    assert sorted(csv["run_id"]) == sorted(front["run_id"])
    assert np.isfinite(csv["wer_dev"]).all()
