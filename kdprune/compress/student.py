"""The student of a compression run: built from the teacher (`build_student`), trained
on one joint loss (`StudentLoss`), measured at the end (`evaluate_student`)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdprune.compress.config import CompressConfig
from kdprune.contract import EVAL_SPLITS, utterances_file
from kdprune.data.batching import Batch
from kdprune.distill.kd import KDConfig, LayerKD
from kdprune.distill.small import init_small_from_teacher, small_student_config
from kdprune.eval import latency_lock
from kdprune.eval.evaluate import decode_set, model_latency, write_records
from kdprune.models.conformer import lengths_to_mask
from kdprune.models.transducer import Transducer
from kdprune.prepare import Prepared
from kdprune.presets import CompressRecipe
from kdprune.pruning.budget import Lagrangian, lagrangian_step
from kdprune.pruning.gates import PruneConfig, attach_gates
from kdprune.pruning.lrf import factorise
from kdprune.train.losses import asr_loss
from kdprune.train.precision import full_precision


@dataclass(kw_only=True)
class PruneState:
    gated: bool  # HardConcrete gates attached (l0)
    factorised: bool  # LRF applied
    lagrangian: Lagrangian | None  # budget term (l0)
    teacher_encoder_params: int


def build_student(
    cfg: CompressConfig, teacher: Transducer, recipe: CompressRecipe
) -> tuple[Transducer, PruneState]:
    """Student initialised from the teacher (or built smaller for `small`)."""
    tcfg = teacher.cfg
    if cfg.streaming:  # fixed chunks, as the student will be decoded
        enc_cfg = replace(
            tcfg.encoder,
            streaming=True,
            dynamic_chunks=False,
            chunk_size=cfg.chunk_size,
            left_chunks=cfg.left_chunks,
        )
    elif tcfg.encoder.dynamic_chunks:
        # A dynamic-chunk teacher's convolution is causal: its full-context students keep
        # that (and the dynamic chunks), so they can still be streamed.
        enc_cfg = tcfg.encoder
    else:
        enc_cfg = replace(tcfg.encoder, streaming=False)
    if cfg.method == "small":
        enc_cfg = small_student_config(enc_cfg, cfg.target_sparsity)
        student = Transducer(replace(tcfg, encoder=enc_cfg))
        # Same d_model: front end, normaliser, predictor, joiner and CTC head start from the
        # teacher; the encoder layers from evenly spaced teacher layers, truncated.
        for name in ("normaliser", "predictor", "joiner", "ctc"):
            getattr(student, name).load_state_dict(getattr(teacher, name).state_dict())
        init_small_from_teacher(student.encoder, teacher.encoder)
    else:
        student = Transducer(replace(tcfg, encoder=enc_cfg))
        student.load_state_dict(copy.deepcopy(teacher.state_dict()))
    state = PruneState(
        gated=False,
        factorised=False,
        lagrangian=None,
        teacher_encoder_params=teacher.encoder_params(),
    )
    if cfg.method == "lrf":
        factorise(student, cfg.rank_ratio)
        state.factorised = True
    elif cfg.method == "l0":
        attach_gates(student, PruneConfig())
        state.gated = True
        state.lagrangian = Lagrangian(
            state.teacher_encoder_params, cfg.target_sparsity, recipe.target_warmup_steps
        )
    return student, state


class StudentLoss(nn.Module):
    """Student + KD projections + Lagrangian in one module, so DDP syncs all of them.

    forward -> (loss, stats): L = [L_rnnt + ctc_w L_ctc] + kd_weight L_kd + Lagrangian.
    Under autocast the model runs in bf16/fp16; the KD distances and the Lagrangian (and,
    in `asr_loss`, RNN-T and CTC) are computed in fp32.
    """

    def __init__(
        self,
        student: Transducer,
        teacher: Transducer,
        lagrangian: nn.Module | None,
        kd_weight: float,
        use_asr: bool,
        ctc_weight: float,
    ) -> None:
        super().__init__()
        self.student, self.lagrangian = student, lagrangian
        self.kd_weight, self.use_asr, self.ctc_weight = kd_weight, use_asr, ctc_weight
        s, t = student.cfg.encoder, teacher.cfg.encoder
        self.kd = (
            LayerKD(s.d_model, t.d_model, s.num_layers, t.num_layers, KDConfig())
            if kd_weight > 0
            else None
        )

    def idle_modules(self) -> list[nn.Module]:
        """The student's parts this loss gives no gradient: without the ASR loss
        (sequential pruning) the predictor, joiner and CTC head; without CTC its head.
        `run_stage` freezes them for the stage, so DDP wraps only what trains."""
        s = self.student
        if not self.use_asr:
            return [s.predictor, s.joiner, s.ctc]
        return [s.ctc] if self.ctc_weight <= 0 else []

    def forward(
        self, batch: Batch, teacher_hidden: tuple[torch.Tensor, ...] | None, step: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        stats: dict[str, float] = {}
        loss = torch.zeros((), device=batch.feats.device)
        if self.use_asr:
            r = asr_loss(
                self.student, batch, batch.feats, self.ctc_weight, return_hidden=self.kd is not None
            )
            loss = loss + r.loss
            enc = r.enc
            stats |= {
                "train/loss_rnnt": float(r.rnnt.detach()),
                "train/loss_ctc": float(r.ctc.detach()),
            }
        else:
            enc = self.student.encode(batch.feats, batch.feat_lens, return_hidden=True)
        fp32 = full_precision(batch.feats.device.type)
        if self.kd is not None:
            valid = lengths_to_mask(enc.lengths, enc.out.shape[1])
            with fp32:
                lkd = self.kd(
                    tuple(h.float() for h in enc.hidden),
                    tuple(h.float() for h in teacher_hidden),
                    valid,
                )
            loss = loss + self.kd_weight * lkd
            stats["train/loss_kd"] = float(lkd.detach())
        if self.lagrangian is not None:
            with fp32:
                lag = lagrangian_step(self.student, self.lagrangian, step)
            loss = loss + lag.loss
            stats |= lag.stats(self.lagrangian)
        return loss, stats


def evaluate_student(
    model: Transducer,
    data: Prepared,
    device: str | torch.device,
    utterances_dir: Path | None = None,
) -> dict[str, Any]:
    """Final DESIGN §3 metrics of the materialised student, relative to `data.teacher`.
    With ``utterances_dir``, each split's per-utterance results are written there too
    (``utterances_dev.jsonl``, ``utterances_test.jsonl``: the sweep logs them to MLflow,
    and the report's paired bootstrap intervals resample them)."""
    teacher = data.teacher.model
    t_params, t_enc = teacher.num_params(), teacher.encoder_params()
    enc = model.encoder_params()
    wer = {}
    for split, fs in zip(EVAL_SPLITS, (data.dev, data.test), strict=True):
        # heavy work like a training step: a latency measured on this node meanwhile (another
        # trial's) waits for it, and it waits for that measurement (kdprune.eval.latency_lock)
        with latency_lock.shared():
            wer[split], records = decode_set(model, fs, data.tokenizer, device)
        if utterances_dir is not None:
            write_records(Path(utterances_dir) / utterances_file(split), records)
    return {
        "wer_dev": wer["dev"],
        "wer_test": wer["test"],
        "params": model.num_params(),
        "encoder_params": enc,
        "params_ratio": model.num_params() / t_params,
        "encoder_params_ratio": enc / t_enc,
        "achieved_sparsity": 1 - enc / t_enc,
        **model_latency(model, data.test, data.tokenizer, device),
    }
