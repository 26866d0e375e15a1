"""Joint pruning + RNN-T training (the paper's strategy) vs the sequential baseline
(task-agnostic prune + KD first, then RNN-T fine-tuning), for l0 and LRF.

Usage:
    .venv/bin/python sweeps/joint_vs_sequential.py --smoke-test
    .venv/bin/python sweeps/joint_vs_sequential.py --trials 24
    .venv/bin/python sweeps/joint_vs_sequential.py --resume
    ray job submit --working-dir . -- python sweeps/joint_vs_sequential.py --preset paper --gpu
"""

import sys

from kdprune.orchestration.cli import main
from kdprune.orchestration.config import SpaceConfig

SPACE = SpaceConfig(methods=("l0", "lrf"), kd_weights=(0.5, 1.0), schedules=("joint", "sequential"))
SMOKE_POINTS = (
    {"method": "l0", "target_sparsity": 0.5, "kd_weight": 1.0, "schedule": "joint"},
    {"method": "lrf", "rank_ratio": 0.5, "kd_weight": 1.0, "schedule": "sequential"},
)

if __name__ == "__main__":
    sys.exit(main(__doc__, "joint_vs_sequential", SPACE, smoke={"initial_points": SMOKE_POINTS}))
