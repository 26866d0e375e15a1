"""Which corpus a sweep ran on, in MLflow (issue 12 item 1): the parent and every child
carry the param ``data`` (a short hash of the three manifests' content) and the tag
``kdprune.data_paths`` (their paths), take the user's manifests as dataset inputs, and
`kdprune report` shows them. A real sqlite store, the sweep driver's own `start_run` and
tracker (no Ray); then one sweep through Ray with the synthetic trainer (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes import fake_utterances, write_utterances
from mlflow import MlflowClient
from sweep_harness import SYNTH, SYNTH_ARGS, finish, start_sweep, sweep_env, sweep_runs

from kdprune.analysis.report import write_report
from kdprune.contract import PARAM_DATA, TAG_DATA_PATHS, resolve_tracking_uri, utterances_file
from kdprune.data.manifest import read_manifest, write_manifest
from kdprune.data.selection import data_digest, manifest_fields
from kdprune.orchestration.config import SweepConfig
from kdprune.orchestration.space import grid_configs
from kdprune.orchestration.tracking import SweepTracker
from kdprune.orchestration.tuner import start_run


@pytest.fixture()
def corpus(tmp_path, tiny_manifests) -> dict[str, Path]:
    out = {}
    for split, n in (("train", 6), ("dev", 3), ("test", 4)):
        utts = read_manifest(tiny_manifests[split])[:n]
        out[split] = write_manifest(tmp_path / "my-corpus" / f"{split}.jsonl", utts, absolute=True)
    return out


def finished(root: Path, wer: float) -> dict:
    """A finished trial's result, with the folder `compress` would leave."""
    model = root / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    for split in ("dev", "test"):
        write_utterances(root / utterances_file(split), fake_utterances(wer, 4, 0))
    metrics = {"wer_dev": wer, "wer_test": wer, "params": 5e4 * (1 + wer), "encoder_params": 3e4}
    metrics.update(params_ratio=0.5, latency_ms_per_audio_s=3.0, rtf=0.003, achieved_sparsity=0.5)
    return {**metrics, "model_dir": str(model), "final": True, "stopped_early": False}


def carries_the_corpus(run, corpus: dict[str, Path]) -> None:
    assert run.data.params[PARAM_DATA] == data_digest(corpus)
    assert json.loads(run.data.tags[TAG_DATA_PATHS]) == {s: str(p) for s, p in corpus.items()}
    assert not any(k.endswith("_manifest") for k in run.data.params)  # paths: in the tag
    inputs = {
        (d.dataset.name, json.loads(d.dataset.source)["uri"]) for d in run.inputs.dataset_inputs
    }
    assert inputs == {(f"my-corpus {s}", str(p)) for s, p in corpus.items()}


def test_parent_children_and_report_carry_the_corpus(corpus, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    work = tmp_path / "work"
    grid = ({"method": "l0"}, {"method": "lrf"})
    cfg = SweepConfig(name="mine", preset="tiny", workdir=str(work), grid=grid,
                      reference_point=(1.0, 1e5), **manifest_fields(corpus))  # fmt: skip
    cfg = cfg.resolved()
    run, _, _ = start_run(cfg, resume=False, prepare=False)  # the driver's parent run
    uri = resolve_tracking_uri(workdir=work)
    client = MlflowClient(uri)
    carries_the_corpus(client.get_run(run.parent_run_id), corpus)

    tracker = SweepTracker(uri, cfg.name, run.run_name, run.manifests)  # as the callback's
    for i, config in enumerate(grid_configs(cfg)):
        assert config["test_manifest"] == str(corpus["test"])  # the trial trains on it
        child, _ = tracker.child_run(run.parent_run_id, f"t{i}", config)
        tracker.finish_child(child, finished(tmp_path / f"t{i}", 0.2 + 0.1 * i))
        carries_the_corpus(client.get_run(child), corpus)

    report = write_report("mine", uri, tmp_path / "report")
    assert report["status"] == "ok"
    paths = {s: str(p) for s, p in corpus.items()}
    assert report[PARAM_DATA] == {data_digest(corpus): paths}
    text = Path(report["report"]).read_text()
    assert f"`{data_digest(corpus)}`: train `{corpus['train']}`" in text


def test_a_sweep_from_before_the_data_param_says_so(tmp_path):
    from fakes import synthetic_store

    uri = synthetic_store(tmp_path, "old", 4)
    report = write_report("old", uri, tmp_path / "report")
    assert report[PARAM_DATA] == {}
    assert "Data: not recorded" in Path(report["report"]).read_text()


@pytest.mark.slow
def test_a_sweep_through_ray_logs_the_corpus_on_every_run(corpus, tmp_path):
    work = tmp_path / "work"
    flags = [a for s, p in corpus.items() for a in (f"--{s}-manifest", str(p))]
    args = [*SYNTH_ARGS, "--smoke-test", "--trials", "2", "--no-early-stopping", *flags]
    proc = start_sweep(SYNTH, args, sweep_env(work), tmp_path / "sweep")
    result = finish(proc, tmp_path / "sweep", 1800)  # a hang guard: 2 busy shared cores
    client, parents, children = sweep_runs(result["tracking_uri"], result["experiment"])
    assert len(parents) == 1 and len(children) == 2
    for run in (*parents, *children):
        carries_the_corpus(run, corpus)
    for child in children:  # the trial's config, as its workers got it
        path = client.download_artifacts(child.info.run_id, "compress_config.json", tmp_path)
        config = json.loads(Path(path).read_text())
        assert {k: config[k] for k in manifest_fields(corpus)} == manifest_fields(corpus)
