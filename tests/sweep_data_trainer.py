"""A sweep trainer for tests that loads real data (imported by Ray workers by name, so it
lives in a plain module, not in a test file).

`data_compress` has `kdprune.compress.compress`'s signature: it reads a manifest of the
tiny corpus, decodes every utterance's audio and computes its log-mel features (no cache,
as a trial on a fresh node would), keeps them while it trains the synthetic trainer's
model, and adds ``data_utterances`` / ``data_frames`` to the final metrics.
Environment: ``KDPRUNE_TEST_MANIFEST``, the manifest to read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def data_compress(
    cfg: Any,
    workdir: Path,
    out_dir: Path | None = None,
    teacher_dir: Path | None = None,
    ctx: Any = None,
) -> dict[str, Any]:
    from kdprune.data.audio import load_audio
    from kdprune.data.features import FeatureConfig, log_mel
    from kdprune.data.manifest import read_manifest
    from kdprune.orchestration.synthetic import synthetic_compress

    front = FeatureConfig()
    utts = read_manifest(os.environ["KDPRUNE_TEST_MANIFEST"])
    feats = [log_mel(torch.from_numpy(load_audio(u.audio_filepath)), front) for u in utts]
    result = synthetic_compress(cfg, workdir, out_dir, teacher_dir, ctx)
    result["data_utterances"] = len(feats)
    result["data_frames"] = sum(int(f.shape[0]) for f in feats)
    return result
