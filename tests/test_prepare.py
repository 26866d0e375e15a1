"""`prepare()`: the one preparation of a teacher and its data, shared by compress, the
sweep driver, the search benchmark and the method table."""

from pathlib import Path

from kdprune.prepare import RUNG_UTTS, prepare


def test_prepare_returns_teacher_tokenizer_and_feature_sets(tiny_teacher, tiny_workdir):
    p = prepare("tiny", tiny_workdir, teacher=tiny_teacher["model_dir"])
    assert p.teacher_dir == Path(tiny_teacher["model_dir"])
    assert p.tokenizer is p.teacher.tokenizer
    assert p.teacher.model.encoder_params() == tiny_teacher["encoder_params"]
    assert set(p.manifests) == {"train", "dev", "test"}
    for split in ("train", "dev", "test"):
        fs = getattr(p, split)
        assert len(fs.utts) == len(fs.num_frames) > 0
        n_mels = p.teacher.config.features.n_mels
        assert all(fs[i].shape == (fs.num_frames[i], n_mels) for i in range(len(fs)))
    n = min(RUNG_UTTS, len(p.dev.utts))
    assert p.dev_rung.utts == p.dev.utts[:n] and len(p.dev_rung.num_frames) == n


def test_prepare_without_a_teacher_uses_the_presets(tiny_teacher, tiny_workdir):
    p = prepare("tiny", tiny_workdir)  # the tiny teacher is cached: finetune returns it
    assert p.teacher_dir == Path(tiny_teacher["model_dir"])
