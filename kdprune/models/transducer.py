"""RNN-T: normaliser + conformer encoder (transcriber), LSTM predictor, joiner; CTC aux head."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from kdprune.data.features import FeatureConfig
from kdprune.models.conformer import ConformerConfig, ConformerEncoder, EncoderOutput


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Everything needed to rebuild a model: front end, encoder, predictor, joiner."""

    vocab_size: int  # sentencepiece pieces; the blank symbol is id `vocab_size` (last)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    encoder: ConformerConfig = field(default_factory=ConformerConfig)
    pred_dim: int = 256  # predictor embedding and LSTM width
    pred_layers: int = 1
    joint_dim: int = 256
    dropout: float = 0.1  # predictor dropout

    @property
    def blank(self) -> int:
        return self.vocab_size

    @property
    def num_classes(self) -> int:
        return self.vocab_size + 1


class Normaliser(nn.Module):
    """Global mean/variance normalisation with statistics stored in the model."""

    def __init__(self, n_mels: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_mels))
        self.register_buffer("std", torch.ones(n_mels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Predictor(nn.Module):
    """Label history (B, U) ids -> (B, U, P) and the LSTM state. Blank (id `vocab_size`,
    the last class) is the start-of-sequence input (`Transducer.predict` prepends it)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(cfg.num_classes, cfg.pred_dim)
        self.lstm = nn.LSTM(cfg.pred_dim, cfg.pred_dim, cfg.pred_layers, batch_first=True)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(
        self, tokens: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        out, state = self.lstm(self.embed(tokens), state)
        return self.dropout(out), state


class Joiner(nn.Module):
    """enc (.., D) and pred (.., P) projections added, tanh, -> logits over vocab + blank."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.enc_proj = nn.Linear(cfg.encoder.d_model, cfg.joint_dim)
        self.pred_proj = nn.Linear(cfg.pred_dim, cfg.joint_dim)
        self.out = nn.Linear(cfg.joint_dim, cfg.num_classes)

    def forward(self, enc: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """enc (B, T, D), pred (B, U, P) -> logits (B, T, U, V+1), blank last."""
        return self.out(torch.tanh(self.enc_proj(enc)[:, :, None] + self.pred_proj(pred)[:, None]))


class Transducer(nn.Module):
    """The ASR model. `num_params()` counts what runs at inference (encoder, predictor,
    joiner; not the training-only CTC head)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.normaliser = Normaliser(cfg.features.n_mels)
        self.encoder = ConformerEncoder(cfg.encoder)
        self.predictor = Predictor(cfg)
        self.joiner = Joiner(cfg)
        # CTC head: training aid (speeds convergence); not used at inference.
        self.ctc = nn.Linear(cfg.encoder.d_model, cfg.num_classes)

    def encode(
        self, feats: torch.Tensor, lengths: torch.Tensor, return_hidden: bool = False
    ) -> EncoderOutput:
        """Raw log-mel (B, T, F) -> encoder output (B, T', D)."""
        return self.encoder(self.normaliser(feats), lengths, return_hidden)

    def predict(self, targets: torch.Tensor) -> torch.Tensor:
        """Targets (B, U) -> predictor output (B, U+1, P), prepended with blank/SOS."""
        sos = torch.full_like(targets[:, :1], self.cfg.blank)
        out, _ = self.predictor(torch.cat([sos, targets], dim=1))
        return out

    def num_params(self) -> int:
        return sum(
            p.numel() for m in (self.encoder, self.predictor, self.joiner) for p in m.parameters()
        )

    def encoder_params(self) -> int:
        return self.encoder.num_params()
