"""The sweep driver builds the corpus and the feature caches once, before any trial."""

from kdprune.orchestration.config import SweepConfig
from kdprune.orchestration.tuner import prepare_teacher


def test_driver_prepares_corpus_and_features_before_trials(tmp_path, tiny_teacher):
    workdir = tmp_path / "work"
    teacher = tiny_teacher["model_dir"]
    cfg = SweepConfig(name="prep", preset="tiny", workdir=str(workdir), teacher_dir=teacher)
    assert prepare_teacher(cfg)[0] == teacher
    splits = ("train.jsonl", "dev.jsonl", "test.jsonl")  # (the corpus adds eval sets too)
    manifests = sorted(p.name for p in workdir.glob("data/tiny-*/*.jsonl") if p.name in splits)
    assert manifests == ["dev.jsonl", "test.jsonl", "train.jsonl"]
    indexes = list((workdir / "features").glob("*/index.npz"))  # one cache folder a split
    assert sorted(p.parent.name.split("-")[0] for p in indexes) == ["dev", "test", "train"]
    first = {p: p.stat().st_mtime_ns for p in indexes}
    prepare_teacher(cfg)  # a resumed sweep: everything reused
    assert {p: p.stat().st_mtime_ns for p in (workdir / "features").glob("*/index.npz")} == first
