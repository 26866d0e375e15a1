"""ASR losses: RNN-T (torchaudio) with an optional CTC auxiliary loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchaudio.functional as AF
from torch.nn import functional as F

from kdprune.data.batching import Batch
from kdprune.models.conformer import EncoderOutput
from kdprune.models.transducer import Transducer


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
) -> AsrLoss:
    """RNN-T loss averaged per utterance (+ CTC on the encoder output).

    `feats` are the (possibly augmented) features for `batch`; torchaudio's rnnt_loss
    takes raw logits and int32 targets/lengths, blank = last class.
    """
    enc = model.encode(feats, batch.feat_lens, return_hidden=return_hidden)
    pred = model.predict(batch.targets)
    logits = model.joiner(enc.out, pred)  # (B, T', U+1, V+1)
    enc_lens = enc.lengths.clamp(min=1)
    rnnt = AF.rnnt_loss(
        logits.float(),
        batch.targets.int(),
        enc_lens.int(),
        batch.target_lens.int(),
        blank=model.cfg.blank,
        reduction="mean",
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
