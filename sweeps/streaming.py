"""Streaming (chunked attention, causal convolution) vs non-streaming students, l0 and
LRF with KD; the streaming chunk size is searched too. Objectives default to WER and
latency here.

Usage:
    .venv/bin/python sweeps/streaming.py --smoke-test
    .venv/bin/python sweeps/streaming.py --trials 24
    .venv/bin/python sweeps/streaming.py --objectives wer_dev,params,latency
    .venv/bin/python sweeps/streaming.py --resume
    ray job submit --working-dir . -- python sweeps/streaming.py --preset paper --gpu
"""

import sys

from kdprune.orchestration.cli import main
from kdprune.orchestration.config import SpaceConfig

SPACE = SpaceConfig(
    methods=("l0", "lrf"), kd_weights=(0.5, 1.0), streaming=(False, True), chunk_sizes=(4, 8, 16)
)
SMOKE_POINTS = (
    {"method": "l0", "target_sparsity": 0.5, "kd_weight": 1.0, "streaming": True, "chunk_size": 8},
    {"method": "lrf", "rank_ratio": 0.5, "kd_weight": 1.0, "streaming": False},
)

if __name__ == "__main__":
    sys.exit(
        main(
            __doc__,
            "streaming",
            SPACE,
            smoke={"initial_points": SMOKE_POINTS},
            defaults={"objectives": ("wer_dev", "latency_ms_per_audio_s")},
        )
    )
