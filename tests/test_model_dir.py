"""Model directories refuse what they cannot load safely or correctly, with clear errors."""

import json
import os
import pickle
import shutil

import pytest
import torch

from kdprune.models.model_dir import ModelDirError, load_model_dir
from kdprune.train.checkpoint import load_checkpoint


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_missing_files_named(tiny_teacher, tmp_path):
    d = _copy(tiny_teacher["model_dir"], tmp_path / "m")
    (d / "tokenizer.model").unlink()
    with pytest.raises(ModelDirError, match="missing tokenizer.model"):
        load_model_dir(d)
    with pytest.raises(ModelDirError, match="not found"):
        load_model_dir(tmp_path / "nope")


def test_other_format_version_refused(tiny_teacher, tmp_path):
    d = _copy(tiny_teacher["model_dir"], tmp_path / "m")
    meta = json.loads((d / "config.json").read_text())
    meta["format_version"] = 999
    (d / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ModelDirError, match="format version 999"):
        load_model_dir(d)


def test_tokenizer_that_does_not_match_the_model(tiny_teacher, tmp_path):
    from kdprune.data.tokenizer import train_tokenizer

    d = _copy(tiny_teacher["model_dir"], tmp_path / "m")
    train_tokenizer(["completely different words here"] * 20, d / "tokenizer.model", vocab_size=20)
    with pytest.raises(ModelDirError, match="tokenizer does not match"):
        load_model_dir(d)


def test_weights_that_do_not_match_config(tiny_teacher, tmp_path):
    d = _copy(tiny_teacher["model_dir"], tmp_path / "m")
    meta = json.loads((d / "config.json").read_text())
    meta["model"]["joint_dim"] += 1
    (d / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ModelDirError, match="does not match config.json"):
        load_model_dir(d)


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/kdprune-pwned",))


def test_pickle_payload_in_checkpoint_is_refused(tmp_path):
    """Checkpoints load with weights_only=True: a planted pickle payload never runs."""
    marker = "/tmp/kdprune-pwned"
    if os.path.exists(marker):
        os.unlink(marker)
    (tmp_path / "checkpoint.pt").write_bytes(pickle.dumps({"model": _Payload()}))
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(tmp_path, torch.nn.Linear(2, 2), None)
    assert not os.path.exists(marker)
