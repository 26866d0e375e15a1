"""A cached compression result is reused only for the very teacher it was made from: the
cache key holds the teacher directory's content hash (`kdprune.models.digest`), so a
teacher changed in place is a new run and a deleted one is an error, never a silent hit."""

from __future__ import annotations

import shutil

import pytest
import torch

from kdprune.compress import CompressConfig, compress
from kdprune.models.digest import model_dir_digest
from kdprune.models.model_dir import ModelDirError, load_model_dir, save_model_dir

RUN = CompressConfig(preset="tiny", method="lrf", rank_ratio=0.5, kd_weight=1.0, steps=2)


def test_changed_or_deleted_teacher_is_not_reused(tiny_workdir, tiny_teacher, tmp_path):
    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_teacher["model_dir"], teacher)
    first = compress(RUN, tiny_workdir, teacher_dir=teacher)
    again = compress(RUN, tiny_workdir, teacher_dir=teacher)  # the same teacher: cached
    assert again["model_dir"] == first["model_dir"]

    before = model_dir_digest(teacher)
    loaded = load_model_dir(teacher)
    with torch.no_grad():
        next(loaded.model.parameters()).add_(1e-3)  # retrained in place, same path
    save_model_dir(teacher, loaded.model, loaded.tokenizer, loaded.extra)
    assert model_dir_digest(teacher) != before
    changed = compress(RUN, tiny_workdir, teacher_dir=teacher)
    assert changed["model_dir"] != first["model_dir"]

    shutil.rmtree(teacher)
    with pytest.raises(ModelDirError, match="not found"):
        compress(RUN, tiny_workdir, teacher_dir=teacher)


def test_digest_follows_content_not_timestamps(tmp_path, tiny_teacher):
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(tiny_teacher["model_dir"], a)
    shutil.copytree(tiny_teacher["model_dir"], b)  # new mtimes, same bytes
    assert model_dir_digest(a) == model_dir_digest(b)
    (b / "config.json").write_text((b / "config.json").read_text() + "\n")
    assert model_dir_digest(a) != model_dir_digest(b)
