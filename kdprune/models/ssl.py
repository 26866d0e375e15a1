"""BEST-RQ self-supervised pre-training of the conformer encoder (Chiu et al., 2022).

A frozen random projection + random codebook turn stacked normalised feature frames into
discrete targets; the encoder sees the input with masked spans replaced by noise and
predicts the codebook id of each masked frame (cross-entropy). Nothing here is learned
but the encoder and a linear head.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from kdprune.models.conformer import ConformerEncoder


@dataclass(frozen=True, kw_only=True)
class BestRqConfig:
    codebook_size: int = 512
    codebook_dim: int = 16
    mask_prob: float = 0.02  # probability that a (subsampled) frame starts a masked span
    mask_span: int = 6  # span length in subsampled frames
    noise_std: float = 0.1  # masked input frames are replaced with N(0, noise_std)
    seed: int = 1234  # seeds projection and codebook: fixed, so targets never move


class BestRq(nn.Module):
    def __init__(self, encoder: ConformerEncoder, cfg: BestRqConfig) -> None:
        super().__init__()
        self.encoder, self.cfg = encoder, cfg
        s, f = encoder.cfg.subsampling, encoder.cfg.input_dim
        g = torch.Generator().manual_seed(cfg.seed)
        proj = torch.empty(s * f, cfg.codebook_dim)
        nn.init.xavier_normal_(proj, generator=g)
        self.register_buffer("projection", proj)
        self.register_buffer(
            "codebook",
            F.normalize(torch.randn(cfg.codebook_size, cfg.codebook_dim, generator=g), dim=-1),
        )
        self.head = nn.Linear(encoder.cfg.d_model, cfg.codebook_size)

    @torch.no_grad()
    def targets(self, x: torch.Tensor, t_out: int) -> torch.Tensor:
        """Normalised features (B, T, F) -> codebook ids (B, T') of stacked frames."""
        s = self.encoder.cfg.subsampling
        b, t, f = x.shape
        need = t_out * s
        x = F.pad(x, (0, 0, 0, max(0, need - t)))[:, :need]
        stacked = x.reshape(b, t_out, s * f).float()
        # The codebook lookup in fp32 under autocast: bf16 would flip near-tied targets.
        with torch.autocast(x.device.type, enabled=False):
            z = F.normalize(stacked @ self.projection, dim=-1)
            return (z @ self.codebook.T).argmax(-1)

    def span_mask(self, b: int, t_out: int, gen: torch.Generator) -> torch.Tensor:
        starts = torch.rand(b, t_out, generator=gen) < self.cfg.mask_prob
        mask = torch.zeros(b, t_out, dtype=torch.bool)
        for k in range(self.cfg.mask_span):
            mask[:, k:] |= starts[:, : t_out - k]
        return mask

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, float]:
        """x: normalised features (B, T, F). Returns (loss, accuracy on masked frames)."""
        s = self.encoder.cfg.subsampling
        t_out = int(self.encoder.subsampling.output_lengths(torch.tensor([x.shape[1]])))
        tgt = self.targets(x, t_out)
        mask = self.span_mask(x.shape[0], t_out, gen).to(x.device)
        out_lens = self.encoder.subsampling.output_lengths(lengths)
        valid = torch.arange(t_out, device=x.device)[None] < out_lens[:, None]
        mask &= valid
        frame_mask = mask.repeat_interleave(s, dim=1)
        frame_mask = F.pad(frame_mask, (0, max(0, x.shape[1] - frame_mask.shape[1])))[
            :, : x.shape[1]
        ]
        noise = torch.randn(x.shape, generator=gen).to(x.device) * self.cfg.noise_std
        x = torch.where(frame_mask[..., None], noise, x)
        enc = self.encoder(x, lengths)
        logits = self.head(enc.out)
        if not bool(mask.any()):
            mask = valid
        loss = F.cross_entropy(logits[mask].float(), tgt[mask])
        acc = float((logits[mask].argmax(-1) == tgt[mask]).float().mean())
        return loss, acc
