"""l0 structured pruning vs low-rank factorisation (LRF), each with and without KD: the
product's headline sweep (Ray Tune + Optuna over `kdprune compress`, Ray Train per trial,
MLflow tracking, Pareto front of WER vs parameters).

Usage:
    .venv/bin/python sweeps/l0_vs_lrf.py --smoke-test          # 4 tiny trials, minutes
    .venv/bin/python sweeps/l0_vs_lrf.py                       # demo preset, 8 trials (~18 min on 2 cores)
    .venv/bin/python sweeps/l0_vs_lrf.py --objectives wer_dev,latency --sampler tpe
    .venv/bin/python sweeps/l0_vs_lrf.py --resume              # after the driver died
    .venv/bin/python sweeps/l0_vs_lrf.py --train-manifest train.jsonl --dev-manifest dev.jsonl \
        --test-manifest test.jsonl --teacher path/to/model_dir  # your corpus and teacher
    ray job submit --working-dir . -- python sweeps/l0_vs_lrf.py --preset paper \\
        --gpu --storage s3://bucket/kdprune --teacher /shared/teacher
"""

import sys

from kdprune.orchestration.cli import main
from kdprune.orchestration.config import SpaceConfig

SPACE = SpaceConfig(methods=("l0", "lrf"), kd_weights=(0.0, 0.5, 1.0, 2.0))

if __name__ == "__main__":
    sys.exit(main(__doc__, "l0_vs_lrf", SPACE, defaults={"trials": 8}))
