"""A sweep without --teacher gets its teacher from one Ray Train job (a real embedded Ray,
the tiny preset), never from training in the driver process; built once, then reused,
and a sweep that asks while another builds it waits instead of building a second copy."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

import kdprune.pipeline as pipeline_mod
from kdprune.models.model_dir import load_model_dir
from kdprune.orchestration.config import SweepConfig
from kdprune.orchestration.teacher_job import TEACHER_RUNS, sweep_teacher


@pytest.mark.slow
def test_teacher_is_one_ray_train_job_built_once(tmp_path, tiny_manifests, monkeypatch):
    import ray

    def no_training_here(*args, **kwargs):
        raise AssertionError("the sweep driver process trained a model")

    # Any training in this (the driver's) process fails the test; the Ray worker is
    # another process, untouched by this patch.
    monkeypatch.setattr(pipeline_mod, "fit", no_training_here)
    cfg = SweepConfig(name="teacher", preset="tiny", workdir=str(tmp_path / "work"))
    corpus = {s: Path(p) for s, p in tiny_manifests.items()}

    second: dict = {}

    def concurrent_sweep() -> None:  # asks while the first build is under way
        time.sleep(3)
        second["dir"] = sweep_teacher(cfg, corpus)

    other = threading.Thread(target=concurrent_sweep)
    other.start()
    t0 = time.time()
    model_dir = sweep_teacher(cfg, corpus)
    built_s = time.time() - t0
    other.join(timeout=600)
    assert not ray.is_initialized()  # the embedded Ray it started is shut down

    workdir = (tmp_path / "work").resolve()
    assert Path(model_dir).parent.parent == workdir / "finetune"  # the pipeline's cache
    meta = json.loads((Path(model_dir) / "config.json").read_text())
    assert meta["extra"]["device"] == "cpu" and "default_worker" in meta["extra"]["command"]
    load_model_dir(model_dir)  # a complete model directory
    runs = list((workdir / "ray_results" / TEACHER_RUNS).glob("tiny-*"))
    assert len(runs) == 1, runs  # one job, though two sweeps asked at once
    saved = list(runs[0].glob("checkpoint_*/config.json"))
    assert len(saved) == 1  # the model directory is the run's checkpoint in the storage
    assert second["dir"] == model_dir  # the concurrent sweep waited and reused it

    t0 = time.time()
    assert sweep_teacher(cfg, corpus) == model_dir  # a later sweep: from the cache
    assert time.time() - t0 < built_s / 3
    assert len(list((workdir / "ray_results" / TEACHER_RUNS).glob("tiny-*"))) == 1


def test_a_given_teacher_is_used_as_given(tmp_path):
    cfg = SweepConfig(name="t", preset="tiny", workdir=str(tmp_path), teacher_dir="some/dir")
    assert sweep_teacher(cfg) == str(Path("some/dir").resolve())
    assert not (tmp_path / "finetune").exists()
