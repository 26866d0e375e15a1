"""l0 structured pruning vs low-rank factorisation (LRF), each with and without KD: the
product's headline sweep (Ray Tune + Optuna over `kdprune compress`, Ray Train per trial,
MLflow tracking, Pareto front of WER vs parameters).

Usage:
    .venv/bin/python sweeps/l0_vs_lrf.py --smoke-test          # 4 tiny trials, minutes
    .venv/bin/python sweeps/l0_vs_lrf.py                       # demo preset, 8 trials (~18 min on 2 cores)
    .venv/bin/python sweeps/l0_vs_lrf.py --objectives wer_dev,latency --sampler tpe
    .venv/bin/python sweeps/l0_vs_lrf.py --latency-front      # WER vs latency (own experiment)
    .venv/bin/python sweeps/l0_vs_lrf.py --resume              # after the driver died
    .venv/bin/python sweeps/l0_vs_lrf.py --train-manifest train.jsonl --dev-manifest dev.jsonl \
        --test-manifest test.jsonl --teacher path/to/model_dir  # your corpus and teacher
    ray job submit --working-dir . -- python sweeps/l0_vs_lrf.py --preset paper \\
        --gpu --storage s3://bucket/kdprune --teacher /shared/teacher
"""

import sys

from kdprune.contract import LATENCY
from kdprune.orchestration.cli import main
from kdprune.orchestration.config import SpaceConfig

SPACE = SpaceConfig(methods=("l0", "lrf"), kd_weights=(0.0, 0.5, 1.0, 2.0))
# --latency-front: the same search on WER vs latency (timed by the one latency protocol,
# exclusive on its node, kdprune.eval.latency), tracked as its own MLflow experiment.
LATENCY_FRONT = {"objectives": ("wer_dev", LATENCY)}


def latency_flag(parser) -> None:
    parser.add_argument(
        "--latency-front",
        action="store_true",
        help=f"objectives wer_dev,{LATENCY} (experiment l0_vs_lrf_latency)",
    )


if __name__ == "__main__":
    latency = "--latency-front" in sys.argv[1:]
    name = "l0_vs_lrf_latency" if latency else "l0_vs_lrf"
    defaults = {"trials": 8, **(LATENCY_FRONT if latency else {})}
    sys.exit(main(__doc__, name, SPACE, defaults=defaults, extend=latency_flag))
