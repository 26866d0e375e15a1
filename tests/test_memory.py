"""The training-step memory estimator (kdprune.train.memory) against the peak measured on
this CPU, and the `max_frames` it picks for the paper preset.

Measured: a fresh process runs two real training steps (RNN-T + CTC, backward, AdamW) of a
small conformer in fp32 at 4 and 12 utterances of 8 s; its peak RSS above the RSS before
the model existed (VmHWM after resetting it, big allocations returned to the system at
once) is the step's peak. Stated tolerance: the estimate is within -5 % / +15 % of it (it
errs high: measured here at +2.5 % and +6.9 %).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kdprune.models.conformer import ConformerConfig
from kdprune.models.transducer import ModelConfig
from kdprune.presets import get_preset
from kdprune.train.loop import TrainConfig
from kdprune.train.memory import (
    LABELS_PER_FRAME,
    StepShape,
    estimate_step,
    max_frames_for,
    resolve_max_frames,
)

FRAMES, LABELS, BATCHES = 800, 30, (4, 12)


# A conformer between the tiny and demo presets: big enough that activations dominate.
SMALL = {"num_layers": 4, "d_model": 96, "num_heads": 4, "ffn_dim": 384, "subsampling": 4}
SMALL |= {"subsampling_channels": 32, "kernel_size": 15, "dropout": 0.1, "max_rel_pos": 32}


def small_config() -> ModelConfig:
    enc = ConformerConfig.uniform(**SMALL)
    return ModelConfig(vocab_size=63, encoder=enc, pred_dim=64, joint_dim=64)


def _measure(batches: tuple[int, ...]) -> dict[int, int]:
    """Child process: peak bytes of two training steps at each batch size (fp32, 1 thread)."""
    import ctypes
    import gc

    import torch

    from kdprune.data.batching import Batch
    from kdprune.models.transducer import Transducer
    from kdprune.train.losses import asr_loss

    def status(key: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) * 1024
        raise KeyError(key)

    def steps(b: int, t: int, u: int, n: int) -> None:
        torch.manual_seed(0)
        model = Transducer(small_config())
        opt = torch.optim.AdamW(model.parameters())
        g = torch.Generator().manual_seed(0)
        for _ in range(n):
            feats = torch.randn(b, t, 80, generator=g)
            targets = torch.randint(0, 63, (b, u), generator=g)
            lens, tlens = torch.full((b,), t), torch.full((b,), u)
            batch = Batch(feats, lens, targets, tlens, [""] * b, list(range(b)))
            loss = asr_loss(model, batch, batch.feats, ctc_weight=0.3).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    torch.set_num_threads(1)
    steps(1, 100, 5, 1)  # kernels and libraries loaded before the baseline
    peaks = {}
    for b in batches:
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        base = status("VmRSS:")
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM)
        steps(b, FRAMES, LABELS, 2)  # two: AdamW's moments exist from the first
        peaks[b] = status("VmHWM:") - base
    return peaks


def measured_peaks() -> dict[int, int]:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}  # big tensors mmapped, freed at once
    code = f"import json, test_memory as t; print(json.dumps(t._measure({BATCHES})))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).parent,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return {int(k): v for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items()}


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_estimate_matches_the_measured_cpu_peak():
    peaks = measured_peaks()
    for b, peak in peaks.items():
        est = estimate_step(
            small_config(), StepShape(batch=b, frames=FRAMES, labels=LABELS), device_type="cpu"
        )
        err = est.total / peak - 1
        print(
            f"batch {b}: estimate {est.total / 1e6:.1f} MB, measured {peak / 1e6:.1f} MB, {err:+.1%}"
        )
        assert -0.05 <= err <= 0.15, (b, est, peak)


def test_paper_preset_fits_24_and_80_gb():
    model = get_preset("paper").model_config()
    t = 1201  # 12 s, the paper corpus's longest utterance
    for gb, kd in ((24, False), (24, True), (80, True)):
        kw = {"precision": "bf16", "device_type": "cuda", "teacher": model if kd else None}
        frames = max_frames_for(gb * 10**9, model, utt_frames=t, max_batch=256, gated=kd, **kw)
        shape = StepShape(
            batch=min(256, frames // t), frames=t, labels=math.ceil(t * LABELS_PER_FRAME)
        )
        est = estimate_step(model, shape, gated=kd, **kw)
        assert est.total <= 22e9 * gb / 24 and frames >= 64 * t, (gb, frames, est)
    # fp32 needs more than bf16, and a bigger device allows more frames
    fp32 = max_frames_for(24 * 10**9, model, utt_frames=t, max_batch=256, precision="fp32")
    bf16 = max_frames_for(24 * 10**9, model, utt_frames=t, max_batch=256, precision="bf16")
    assert fp32 < bf16


def test_resolve_keeps_a_set_value_and_fills_auto():
    cfg = TrainConfig(max_frames=6000, max_batch=16)
    assert resolve_max_frames(cfg, "cpu", small_config(), lengths=[500]) is cfg
    auto = resolve_max_frames(
        TrainConfig(max_frames=0, max_batch=16), "cpu", small_config(), lengths=[500, 800]
    )
    assert auto.max_frames >= 800  # at least one longest utterance; at most the batch cap
    assert auto.max_frames <= 16 * 800 + 1000
