"""Shared fixtures: one tiny real corpus (TTS-synthesised) and one tiny trained teacher per
test session, built through the same pipeline functions the CLI uses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Two cores: keep each test process to one intra-op thread unless told otherwise.
torch.set_num_threads(int(os.environ.get("KDPRUNE_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def tiny_workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("kdprune-work")


@pytest.fixture(scope="session")
def tiny_manifests(tiny_workdir) -> dict[str, Path]:
    from kdprune.pipeline import synth_data

    return synth_data("tiny", tiny_workdir)


@pytest.fixture(scope="session")
def tiny_teacher(tiny_workdir, tiny_manifests) -> dict:
    """The tiny dense RNN-T teacher (finetune result dict with model_dir)."""
    from kdprune.pipeline import finetune

    return finetune("tiny", tiny_workdir, init="ssl")
