"""Shared fixtures and helpers: one tiny real corpus (TTS-synthesised) and one tiny trained
teacher per test session, built through the same pipeline functions the CLI uses; the
tiny model configs and random models the unit tests build; a clean environment for the
tests that run the CLI in a child process.

Test modules import the helpers with ``from conftest import ...`` (pytest puts tests/ on
the path and loads this file once as ``conftest``); never from another test module. The
end-to-end sweep tests share their harness through tests/sweep_harness.py.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from kdprune.models.conformer import ConformerConfig, LayerDims
from kdprune.models.transducer import ModelConfig, Transducer
from kdprune.pruning import PruneConfig, attach_gates, factorise, iter_gates

# Two cores: keep each test process to one intra-op thread unless told otherwise.
torch.set_num_threads(int(os.environ.get("KDPRUNE_TEST_THREADS", "1")))

PY = sys.executable


# -- a tiny corpus and teacher -------------------------------------------------------------
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


@pytest.fixture(scope="session")
def librispeech_corpus(tmp_path_factory):
    """A small LibriSpeech-layout tree spoken by TTS voices (tests/librispeech_corpus.py)."""
    from librispeech_corpus import build_librispeech

    return build_librispeech(tmp_path_factory.mktemp("librispeech"))


# -- tiny models ---------------------------------------------------------------------------
# The unit tests' conformer (`ConformerConfig.uniform` arguments): 2 layers of width 32,
# 4 heads, FFN 48, 4x subsampling through 8 channels, kernel 7, no dropout, relative
# positions clipped at 8 frames; when streaming, chunks of 4 frames with 1 chunk of left
# context.
TINY_ENCODER = {
    "num_layers": 2,
    "d_model": 32,
    "num_heads": 4,
    "ffn_dim": 48,
    "subsampling": 4,
    "subsampling_channels": 8,
    "kernel_size": 7,
    "dropout": 0.0,
    "max_rel_pos": 8,
    "chunk_size": 4,
    "left_chunks": 1,
}
# Smaller still, for tests that only save, load or run a model directory (one fits a
# 512 KiB tmpfs with room to spare).
MICRO_ENCODER = dict(TINY_ENCODER, num_layers=1, d_model=16, num_heads=2, ffn_dim=32)
# Every gate: units of every module, whole modules, and ranks of factorised linears.
ALL_GATES = PruneConfig(modules=True, ranks=True)


def tiny_encoder_config(
    layers: tuple[LayerDims, ...] | None = None, *, micro: bool = False, **overrides
) -> ConformerConfig:
    """The tiny (or ``micro``) conformer, ``overrides`` being `ConformerConfig.uniform`
    arguments; ``layers``: per-layer dims instead of uniform ones."""
    cfg = ConformerConfig.uniform(**{**(MICRO_ENCODER if micro else TINY_ENCODER), **overrides})
    return cfg if layers is None else cfg.with_layers(layers)


def tiny_model_config(
    vocab_size: int, *, micro: bool = False, dropout: float = 0.1, **encoder
) -> ModelConfig:
    """An RNN-T of `tiny_encoder_config(micro=micro, **encoder)` with a 16-wide predictor
    and joiner (8-wide when ``micro``); ``dropout``: the predictor's."""
    width = 8 if micro else 16
    return ModelConfig(
        vocab_size=vocab_size,
        encoder=tiny_encoder_config(micro=micro, **encoder),
        pred_dim=width,
        joint_dim=width,
        dropout=dropout,
    )


@torch.no_grad()
def randomise_batch_norm(model: torch.nn.Module) -> None:
    """Non-trivial batch-norm statistics and affine weights (fresh ones are 0 / 1, which
    hide a channel picked or folded wrongly); draws from torch's global generator."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.5, 0.5)


def tiny_model(
    streaming: bool = False,
    seed: int = 0,
    vocab: int = 12,
    *,
    factorised: bool = False,
    gates: PruneConfig | None = None,
    **kw,
) -> Transducer:
    """A tiny Transducer with random weights and non-trivial batch-norm statistics;
    ``factorised``: its encoder's linears factorised (LRF, rank ratio 0.5); ``gates``:
    then these gates attached; ``kw``: `tiny_encoder_config` arguments."""
    torch.manual_seed(seed)
    model = Transducer(tiny_model_config(vocab, streaming=streaming, **kw))
    randomise_batch_norm(model)
    if factorised:
        factorise(model, 0.5)
    if gates is not None:
        attach_gates(model, gates)
    return model


@torch.no_grad()
def randomise_gates(model: torch.nn.Module, seed: int = 0) -> None:
    """Random log α, with layer 0's conv module and two heads of layer 1 fully pruned."""
    gen = torch.Generator().manual_seed(seed)
    for g in iter_gates(model):
        g.log_alpha.copy_(torch.randn(g.n, generator=gen) * 2.5 + 1.0)
    enc = model.encoder
    if enc.layers[0].conv is not None and enc.layers[0].conv.unit_gate is not None:
        enc.layers[0].conv.unit_gate.log_alpha.fill_(-20.0)
    attn = enc.layers[1].attn
    if attn is not None and attn.unit_gate is not None:
        attn.unit_gate.log_alpha[:2] = -20.0
        attn.unit_gate.log_alpha[2:] = 5.0


# -- child processes -----------------------------------------------------------------------
def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This environment without RAY_/MLFLOW_/KDPRUNE_ settings, its default workdir under
    ``tmp_path``, one thread per process; plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_", "KDPRUNE_"))}
    env.update(KDPRUNE_WORKDIR=str(tmp_path / "default-work"), OMP_NUM_THREADS="1")
    env.update(extra)
    return env
