"""What a sweep's MLflow runs hold for the UI (issue 15 item 6), with a real sqlite store and
no Ray: the experiment kind, the parent's description and dataset inputs, children named
by their settings with their config, metrics, per-utterance results and model directory as
artefacts, and the model pulled back from MLflow and from the Model Registry."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
from fakes import fake_utterances, write_utterances
from mlflow import MlflowClient

from kdprune.contract import (
    EXPERIMENT_KIND,
    ROLE_SWEEP,
    SWEEP_GRID,
    TAG_EXPERIMENT_KIND,
    TAG_NOTE,
    TAG_ROLE,
    TAG_SHARED_VIEW,
    TAG_SWEEP_KIND,
    model_artifact_uri,
    registered_model_name,
    ui_runs_path,
    utterances_file,
)
from kdprune.orchestration.run_content import register_runs
from kdprune.orchestration.tracking import SweepTracker

CFG = {"method": "l0", "target_sparsity": 0.67, "kd_weight": 2.0, "rank_ratio": 0.5}
CFG.update(schedule="joint", streaming=False, seed=1, preset="tiny", steps=10)


def manifests(root: Path) -> dict[str, str]:
    out = {}
    for split, n in (("train", 5), ("dev", 3), ("test", 3)):
        path = root / "corpus-abc" / f"{split}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [
            {"audio_filepath": f"a/{split}{i}.wav", "duration": 1.5, "text": "a b"}
            for i in range(n)
        ]
        path.write_text("".join(json.dumps(x) + "\n" for x in lines))
        out[split] = str(path)
    return out


def finished_trial(root: Path) -> dict:
    """A compression run's output folder as `compress` leaves it, and its result."""
    model = root / "trial" / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text('{"encoder": {}}')
    (model / "model.safetensors").write_bytes(b"\0" * 64)
    for split in ("dev", "test"):
        write_utterances(root / "trial" / utterances_file(split), fake_utterances(0.2, 5, 0))
    metrics = {"wer_dev": 0.2, "wer_test": 0.25, "params": 5e4, "encoder_params": 3e4}
    metrics.update(params_ratio=0.5, latency_ms_per_audio_s=3.0, rtf=0.003, achieved_sparsity=0.66)
    return {**metrics, "model_dir": str(model), "final": True, "stopped_early": False}


def test_runs_carry_what_the_ui_compares(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = SweepTracker(uri, "exp", "exp-1", manifests(tmp_path))
    client = MlflowClient(uri)
    exp = client.get_experiment(tracker.experiment_id)
    # The trials view the descriptions link to: children, best dev WER first, metric columns.
    view = json.loads(exp.tags[TAG_SHARED_VIEW])
    assert view["searchFilter"] == "tags.`kdprune.role` = 'trial'"
    assert "metrics.`wer_test`" in view["selectedColumns"] and view["orderByAsc"] is True
    assert ui_runs_path(exp.experiment_id) in exp.tags[TAG_NOTE]
    assert (
        exp.tags[TAG_EXPERIMENT_KIND] == EXPERIMENT_KIND and "kdprune report" in exp.tags[TAG_NOTE]
    )

    parent = client.get_run(tracker.parent_run({"trials": 1}, SWEEP_GRID))
    assert (
        parent.data.tags[TAG_ROLE] == ROLE_SWEEP and parent.data.tags[TAG_SWEEP_KIND] == SWEEP_GRID
    )
    note = parent.data.tags[TAG_NOTE]
    assert "kdprune report --experiment exp" in note and "--register" in note and "wer_test" in note
    assert ui_runs_path(exp.experiment_id) in note
    names = {d.dataset.name: d for d in parent.inputs.dataset_inputs}
    assert set(names) == {"corpus-abc train", "corpus-abc dev", "corpus-abc test"}
    assert json.loads(names["corpus-abc dev"].dataset.profile)["num_rows"] == 3
    assert {t.value for t in names["corpus-abc test"].tags} == {"test"}

    run_id, _ = tracker.child_run(parent.info.run_id, "t1", CFG)
    child = client.get_run(run_id)
    assert child.info.run_name == "l0+KD s=0.67 kd=2 seed=1"
    assert len(child.inputs.dataset_inputs) == 3
    assert tracker.finish_child(run_id, finished_trial(tmp_path)) == "finished"

    files = {f.path for f in client.list_artifacts(run_id)}
    assert {"compress_config.json", "metrics.json", "model", "utterances"} <= files
    cfg = json.loads(
        Path(client.download_artifacts(run_id, "compress_config.json", str(tmp_path))).read_text()
    )
    assert (
        cfg["method"] == "l0"
        and cfg["kd_weight"] == 2.0
        and cfg["seed"] == 1
        and "chunk_size" in cfg
    )
    utts = {f.path for f in client.list_artifacts(run_id, "utterances")}
    assert utts == {"utterances/utterances_dev.jsonl", "utterances/utterances_test.jsonl"}
    got = Path(mlflow.artifacts.download_artifacts(model_artifact_uri(run_id), tracking_uri=uri,
                                                   dst_path=str(tmp_path / "pulled")))  # fmt: skip
    assert sorted(p.name for p in got.iterdir()) == ["config.json", "model.safetensors"]

    versions = register_runs(uri, "exp", [{"run_id": run_id, "label": "l0+KD", "wer_dev": 0.2}])
    assert versions[0]["name"] == registered_model_name("exp") and versions[0]["version"] == 1
    mlflow.set_tracking_uri(uri)
    reg = Path(
        mlflow.artifacts.download_artifacts("models:/kdprune-exp/1", dst_path=str(tmp_path / "reg"))
    )
    assert (reg / "model.safetensors").exists()
    mv = client.get_model_version("kdprune-exp", "1")
    assert mv.run_id == run_id and mv.tags == {"label": "l0+KD", "wer_dev": "0.2"}


def test_resumed_child_keeps_its_name_and_a_missing_model_dir_is_not_fatal(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = SweepTracker(uri, "exp", "exp-1")
    parent = tracker.parent_run({})
    run_id, _ = tracker.child_run(parent, "t1", CFG)
    again, attempt = SweepTracker(uri, "exp", "exp-1").child_run(parent, "t1", CFG)
    assert (again, attempt) == (run_id, 2)
    result = {**finished_trial(tmp_path), "model_dir": str(tmp_path / "gone" / "model")}
    assert tracker.finish_child(run_id, result) == "finished"
    files = {f.path for f in MlflowClient(uri).list_artifacts(run_id)}
    assert "metrics.json" in files and "model" not in files
