"""ASR losses: RNN-T (torchaudio) with an optional CTC auxiliary loss.

The RNN-T joint is the largest tensor of a training step: (B, T', U+1, V+1) logits, their
gradient (torchaudio computes it in the forward) and the (B, T', U+1, J) tanh input and
output. `rnnt_loss_bounded` computes it in sub-batches whose joint fits a memory budget,
each trimmed to its own longest utterance and label sequence and recomputed in the
backward pass (activation checkpointing), so peak memory follows the budget, not the batch.
The loss and its gradients are those of the whole batch (tests/test_rnnt_loss.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchaudio.functional as AF
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from kdprune.data.batching import Batch
from kdprune.models.conformer import EncoderOutput
from kdprune.models.transducer import Transducer

# Default memory budget of one sub-batch's RNN-T joint (forward tensors + gradients).
JOINT_BUDGET_MB = 1024.0


def joint_bytes(batch: int, frames: int, labels: int, model: Transducer) -> int:
    """Bytes the joint of a (batch, frames T', labels U+1) sub-batch holds at its peak:
    fp32 logits and their gradient (V+1 each), and the joiner's sum, tanh output and
    the gradient flowing through them (J each)."""
    per_cell = 4 * (2 * model.cfg.num_classes + 3 * model.cfg.joint_dim)
    return batch * frames * labels * per_cell


def sub_batches(
    enc_lens: torch.Tensor, target_lens: torch.Tensor, model: Transducer, budget_mb: float
) -> list[torch.Tensor]:
    """Indices of the batch grouped (longest first) so each group's trimmed joint fits
    `budget_mb`; a single utterance over the budget still gets its own group."""
    order = torch.argsort(enc_lens, descending=True, stable=True).tolist()
    t_all, u_all = enc_lens.tolist(), target_lens.tolist()
    budget = budget_mb * 2**20
    groups: list[list[int]] = []
    cur: list[int] = []
    u_max = 0
    for i in order:  # longest first, so a group's T' is its first utterance's
        t = t_all[cur[0]] if cur else t_all[i]
        if cur and joint_bytes(len(cur) + 1, t, max(u_max, u_all[i]) + 1, model) > budget:
            groups.append(cur)
            cur, u_max = [], 0
        cur.append(i)
        u_max = max(u_max, u_all[i])
    groups.append(cur)
    return [torch.tensor(g, device=enc_lens.device) for g in groups]


def _rnnt_sum(
    model: Transducer,
    enc: torch.Tensor,
    pred: torch.Tensor,
    targets: torch.Tensor,
    enc_lens: torch.Tensor,
    target_lens: torch.Tensor,
) -> torch.Tensor:
    """Summed RNN-T loss of a (trimmed) batch; the logits go to the loss in fp32."""
    logits = model.joiner(enc, pred)  # (b, T', U+1, V+1)
    return AF.rnnt_loss(
        logits.float(),
        targets.int(),
        enc_lens.int(),
        target_lens.int(),
        blank=model.cfg.blank,
        reduction="sum",
    )


def rnnt_loss_bounded(
    model: Transducer,
    enc: torch.Tensor,
    enc_lens: torch.Tensor,
    pred: torch.Tensor,
    targets: torch.Tensor,
    target_lens: torch.Tensor,
    budget_mb: float = JOINT_BUDGET_MB,
) -> torch.Tensor:
    """RNN-T loss averaged per utterance: enc (B, T', D), pred (B, U+1, P), targets (B, U).

    One group covering the batch is computed directly; several groups are each
    checkpointed, so only one group's joint is alive at a time, forward or backward.
    """
    groups = sub_batches(enc_lens, target_lens, model, budget_mb)
    if len(groups) == 1:
        return _rnnt_sum(model, enc, pred, targets, enc_lens, target_lens) / enc.shape[0]
    total = enc.new_zeros((), dtype=torch.float32)
    for g in groups:
        t, u = int(enc_lens[g].max()), max(1, int(target_lens[g].max()))
        part = checkpoint(
            _rnnt_sum,
            model,
            enc[g, :t],
            pred[g, : u + 1],
            targets[g, :u],
            enc_lens[g],
            target_lens[g],
            use_reentrant=False,
        )
        total = total + part
    return total / enc.shape[0]


@dataclass
class AsrLoss:
    loss: torch.Tensor  # rnnt + ctc_weight * ctc, scalar
    rnnt: torch.Tensor
    ctc: torch.Tensor
    enc: EncoderOutput  # encoder output (with hidden states if requested), for KD


def asr_loss(
    model: Transducer,
    batch: Batch,
    feats: torch.Tensor,
    ctc_weight: float,
    return_hidden: bool = False,
    joint_budget_mb: float = JOINT_BUDGET_MB,
) -> AsrLoss:
    """RNN-T loss averaged per utterance (+ CTC on the encoder output); the joint is
    computed in sub-batches of at most `joint_budget_mb` (`rnnt_loss_bounded`).

    `feats` are the (possibly augmented) features for `batch`; torchaudio's rnnt_loss
    takes raw logits and int32 targets/lengths, blank = last class.
    """
    enc = model.encode(feats, batch.feat_lens, return_hidden=return_hidden)
    pred = model.predict(batch.targets)
    enc_lens = enc.lengths.clamp(min=1)
    rnnt = rnnt_loss_bounded(
        model, enc.out, enc_lens, pred, batch.targets, batch.target_lens, joint_budget_mb
    )
    ctc = torch.zeros((), device=feats.device)
    if ctc_weight > 0:
        logp = F.log_softmax(model.ctc(enc.out).float(), dim=-1).transpose(0, 1)
        ctc = (
            F.ctc_loss(
                logp,
                batch.targets,
                enc_lens,
                batch.target_lens,
                blank=model.cfg.blank,
                reduction="sum",
                zero_infinity=True,
            )
            / batch.targets.shape[0]
        )
    return AsrLoss(rnnt + ctc_weight * ctc, rnnt, ctc, enc)
