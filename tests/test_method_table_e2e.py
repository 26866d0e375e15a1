"""The method table end to end (slow): `sweeps/method_table.py` on the tiny preset (every
row x 2 seeds, sequential and streaming rows, real `compress` in Ray Train trials under
Tune), then `kdprune report --experiment method_table --register`, all in a temporary
workdir with its sqlite MLflow store. Checks what a user finds in MLflow (issue 15 item 6)
and in the report (items 1-2):

- the experiment opens on training runs; the parent describes how to compare its runs;
  parent and children carry the corpus as dataset inputs;
- one child per row and seed, named by its settings, holding its config, metrics,
  per-utterance results and model directory; the model pulled from MLflow loads and has
  the logged size;
- the report's method table has every row with both seeds and every ΔWER with a paired
  bootstrap interval; the registry holds the knee model;
- `--resume` of the finished sweep adds nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
ARGS = ["--preset", "tiny", "--seeds", "0", "1", "--steps", "10"]
ARGS += ["--extra", "sequential", "streaming", "--num-cpus", "2"]
ROWS = 9  # l0, l0+KD, LRF, LRF+KD, small+KD, l0+KD sequential, 3 streaming rows
COMPARISONS = 13  # see test_method_table.test_every_difference_the_paper_needs_is_there


def run(cmd: list[str], env: dict[str, str], timeout: float) -> dict:
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check_store(uri: str, experiment: str, trials: int, report: dict, tmp: Path) -> None:
    """Everything the MLflow UI and the registry should hold after a report --register."""
    import mlflow
    from mlflow import MlflowClient

    from kdprune.analysis.pareto import run_name
    from kdprune.contract import (
        EXPERIMENT_KIND,
        ROLE_SWEEP,
        ROLE_TRIAL,
        SWEEP_GRID,
        TAG_EXPERIMENT_KIND,
        TAG_NOTE,
        TAG_ROLE,
        TAG_SWEEP_KIND,
        model_artifact_uri,
        registered_model_name,
    )
    from kdprune.models.model_dir import load_model_dir

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp.tags[TAG_EXPERIMENT_KIND] == EXPERIMENT_KIND
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get(TAG_ROLE) == ROLE_SWEEP]
    children = [r for r in runs if r.data.tags.get(TAG_ROLE) == ROLE_TRIAL]
    assert len(parents) == 1 and len(children) == trials
    parent = parents[0]
    assert parent.data.tags[TAG_SWEEP_KIND] == SWEEP_GRID
    assert f"kdprune report --experiment {experiment}" in parent.data.tags[TAG_NOTE]
    assert {t.value for d in parent.inputs.dataset_inputs for t in d.tags} == {
        "train",
        "dev",
        "test",
    }
    names = set()
    for child in children:
        assert child.info.status == "FINISHED"
        p = child.data.params  # as strings: typed back as the loader does
        typed = p | {"seed": int(p["seed"]), "streaming": p["streaming"] == "True"}
        assert child.info.run_name == run_name(typed)
        names.add(child.info.run_name)
        assert len(child.inputs.dataset_inputs) == 3
        files = {f.path for f in client.list_artifacts(child.info.run_id)}
        assert {"compress_config.json", "metrics.json", "model", "utterances"} <= files
        for split in ("dev", "test"):
            path = client.download_artifacts(
                child.info.run_id, f"utterances/utterances_{split}.jsonl", str(tmp)
            )
            lines = [json.loads(x) for x in Path(path).read_text().splitlines()]
            assert len(lines) == 12 and {"errors", "ref_words"} <= set(lines[0])
            errors = sum(x["errors"] for x in lines) / sum(x["ref_words"] for x in lines)
            assert errors == pytest.approx(child.data.metrics[f"wer_{split}"])
    assert len(names) == trials  # every child's name tells it apart

    # Any model can be pulled from MLflow and loaded as it is.
    child = children[0]
    got = mlflow.artifacts.download_artifacts(
        model_artifact_uri(child.info.run_id), tracking_uri=uri, dst_path=str(tmp / "pulled")
    )
    model = load_model_dir(Path(got)).model
    assert model.num_params() == child.data.metrics["params"]

    # The report's table and intervals, and the registered knee.
    assert report["status"] == "ok" and len(report["method_table"]) == ROWS
    assert all(r["seeds"] == 2 for r in report["method_table"])
    deltas = report["method_deltas"]
    assert len(deltas) == 2 * COMPARISONS
    assert all(d["low"] is not None and d["low"] <= d["delta"] <= d["high"] for d in deltas)
    assert all(d["utterances"] == 12 for d in deltas)
    md = Path(report["report"]).read_text()
    assert "## Method table" in md and "### Differences" in md
    (reg,) = report["registered"]
    assert reg["run_id"] == report["knee"]["run_id"]
    assert reg["name"] == registered_model_name(experiment)
    mv = client.get_model_version(reg["name"], str(reg["version"]))
    assert mv.run_id == report["knee"]["run_id"]


def test_method_table_sweep_then_report_and_registry(tmp_path, tiny_teacher):
    work = tmp_path / "work"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    env.update(KDPRUNE_WORKDIR=str(work), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    teacher = ["--teacher", tiny_teacher["model_dir"]]
    script = [sys.executable, str(REPO / "sweeps" / "method_table.py")]
    sweep = run([*script, *ARGS, *teacher], env, timeout=3600)
    assert sweep["experiment"] == "method_table" and sweep["trials"] == {"finished": 2 * ROWS}
    kdprune = str(Path(sys.executable).parent / "kdprune")
    report = run([kdprune, "report", "--experiment", "method_table", "--register"], env, 600)
    check_store(sweep["tracking_uri"], "method_table", 2 * ROWS, report, tmp_path)

    again = run([*script, "--resume", "--num-cpus", "2"], env, timeout=900)
    assert again["parent_run_id"] == sweep["parent_run_id"]
    assert again["trials"] == {"finished": 2 * ROWS}
