"""`kdprune compress`: one compression run (one sweep trial).

Student initialised from the teacher; method l0 (HardConcrete gates + Lagrangian budget),
lrf (SVD low-rank factorisation), small (a student built smaller, the traditional KD
baseline) or none (dense); KD from the frozen teacher; schedule joint (prune while
training with RNN-T + KD, the paper's strategy) or sequential (task-agnostic prune + KD
first, then RNN-T training); then materialise, a short mask-free fine-tune, evaluation.

Modules, each importing only those before it: `config` (the run's config, its check and
recipe, the host context), `student` (building the student, the joint loss, the final
evaluation), `stage` (one training stage), `run` (`compress()` itself).
"""

from kdprune.compress.config import CompressConfig, TrainerContext, check_compress_config
from kdprune.compress.run import compress

__all__ = ["CompressConfig", "TrainerContext", "check_compress_config", "compress"]
