"""The sweep driver builds the corpus and the feature caches once, before any trial."""

from kdprune.orchestration.config import SweepConfig
from kdprune.orchestration.tuner import COMPRESS, prepare_data


def test_driver_prepares_corpus_and_features_before_trials(tmp_path, tiny_teacher):
    workdir = tmp_path / "work"
    cfg = SweepConfig(name="prep", preset="tiny", workdir=str(workdir), trainer=COMPRESS)
    prepare_data(cfg, tiny_teacher["model_dir"])
    manifests = sorted(p.name for p in workdir.glob("data/tiny-*/*.jsonl"))
    assert manifests == ["dev.jsonl", "test.jsonl", "train.jsonl"]
    caches = sorted(p.name.split("-")[0] for p in (workdir / "features").glob("*.pt"))
    assert caches == ["dev", "test", "train"]
    first = {p: p.stat().st_mtime_ns for p in (workdir / "features").glob("*.pt")}
    prepare_data(cfg, tiny_teacher["model_dir"])  # a resumed sweep: everything reused
    assert {p: p.stat().st_mtime_ns for p in (workdir / "features").glob("*.pt")} == first
