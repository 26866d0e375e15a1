"""Knowledge distillation from a frozen teacher: layer-to-layer hidden-state KD through
identity-initialised projections (L1 + (1 - cosine), padding-masked)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True, kw_only=True)
class KDConfig:
    """Where and how the student matches the teacher. The caller weights the loss
    (``CompressConfig.kd_weight`` in L = L_rnnt + kd_weight * L_kd)."""

    taps: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)  # teacher layers as fractions of depth
    cosine_weight: float = 1.0  # L_kd per tap = L1 + cosine_weight * (1 - cos)


def tap_layers(num_layers: int, taps: tuple[float, ...]) -> list[int]:
    """Fractions of depth -> 0-based layer indices (deduplicated, in order)."""
    idx = [max(0, min(num_layers - 1, round(f * num_layers) - 1)) for f in taps]
    return sorted(set(idx))


class LayerKD(nn.Module):
    """Projects student hidden states onto the teacher's at matching relative depths."""

    def __init__(
        self,
        student_dim: int,
        teacher_dim: int,
        student_layers: int,
        teacher_layers: int,
        cfg: KDConfig,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.teacher_idx = tap_layers(teacher_layers, cfg.taps)
        self.student_idx = tap_layers(student_layers, cfg.taps)
        if len(self.student_idx) < len(self.teacher_idx):  # a shallow student: reuse its last taps
            self.student_idx += [self.student_idx[-1]] * (
                len(self.teacher_idx) - len(self.student_idx)
            )
        self.student_idx = self.student_idx[: len(self.teacher_idx)]
        self.proj = nn.ModuleList(nn.Linear(student_dim, teacher_dim) for _ in self.teacher_idx)
        for p in self.proj:  # identity init (rectangular eye when dims differ)
            nn.init.eye_(p.weight)
            nn.init.zeros_(p.bias)

    def forward(
        self,
        student: tuple[torch.Tensor, ...],
        teacher: tuple[torch.Tensor, ...],
        valid: torch.Tensor,
    ) -> torch.Tensor:
        """student/teacher: per-layer (B, T, D); valid (B, T) bool. -> scalar loss (mean over taps)."""
        m = valid[..., None].to(student[0].dtype)
        n = m.sum().clamp(min=1)
        total = student[0].new_zeros(())
        for proj, si, ti in zip(self.proj, self.student_idx, self.teacher_idx, strict=True):
            s, t = proj(student[si]), teacher[ti].detach()
            l1 = ((s - t).abs() * m).sum() / (n * t.shape[-1])
            cos = (F.cosine_similarity(s, t, dim=-1, eps=1e-6) * valid).sum() / n
            total = total + l1 + self.cfg.cosine_weight * (1 - cos)
        return total / len(self.proj)
