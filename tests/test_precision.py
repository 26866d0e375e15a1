"""Mixed precision (kdprune.train.precision): --precision resolves per device; `fit` runs
the loss under autocast (bf16 on the CPU here: CPU autocast supports it), fp16 with a
gradient scaler whose state is checkpointed; the loss terms stay fp32; a bf16 `compress`
run of the tiny preset trains."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from kdprune.compress import CompressConfig, TrainerContext, compress
from kdprune.compress.config import compress_recipe
from kdprune.compress.stage import freeze
from kdprune.compress.student import StudentLoss, build_student
from kdprune.data.batching import collate
from kdprune.data.features import FeatureSet
from kdprune.data.manifest import Utterance
from kdprune.prepare import prepare
from kdprune.train.checkpoint import CKPT
from kdprune.train.loop import TrainConfig, fit
from kdprune.train.precision import Amp, resolve_precision


def test_resolve_precision():
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("fp8", "cpu")
    assert Amp.for_device("fp16", "cpu").scaler is not None
    assert Amp.for_device("bf16", "cpu").scaler is None


def _toy_set(n: int = 12) -> FeatureSet:
    g = torch.Generator().manual_seed(0)
    utts = [Utterance(audio_filepath=__file__, duration=1.0, text="x") for _ in range(n)]  # type: ignore[arg-type]
    feats = [torch.randn(20 + i, 4, generator=g) for i in range(n)]
    return FeatureSet(utts, [f.shape[0] for f in feats], feats.__getitem__)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_fit_computes_the_loss_under_autocast(precision, tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    cfg = TrainConfig(max_steps=4, warmup_steps=1, max_frames=80, max_batch=4, log_every=100)
    cfg = replace(cfg, eval_every=0, checkpoint_every=2)
    dtypes = []

    def compute_loss(batch, step):
        out = model(batch.feats)
        dtypes.append(out.dtype)
        return out.float().pow(2).mean(), {}

    fit(model, compute_loss, opt, _toy_set(), None, cfg, tmp_path, precision=precision,
        data_workers=0)  # fmt: skip
    want = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    assert dtypes == [want] * 4
    assert model.weight.dtype == torch.float32  # weights and optimiser state stay fp32
    state = torch.load(tmp_path / CKPT, weights_only=True)["state"]
    assert ("scaler" in state) == (precision == "fp16")


def test_loss_terms_stay_fp32_under_bf16(tiny_workdir, tiny_teacher):
    """The joint loss of an l0 student under bf16 autocast: the model's matmuls run in
    bf16, the loss (RNN-T, CTC, KD, Lagrangian) comes out fp32, close to the fp32 loss."""
    data = prepare("tiny", tiny_workdir, teacher=tiny_teacher["model_dir"])
    teacher = data.teacher.model
    freeze(teacher)
    cfg = CompressConfig(preset="tiny", method="l0", steps=4)
    torch.manual_seed(0)
    student, state = build_student(cfg, teacher, compress_recipe(cfg))
    module = StudentLoss(student, teacher, state.lagrangian, 1.0, True, 0.3).train()
    batch = collate(data.train, list(range(4)), data.tokenizer)
    seen = []
    student.joiner.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    losses = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(1)  # the same gate samples
        with Amp.for_device(precision, "cpu").autocast():
            hidden = teacher.encode(batch.feats, batch.feat_lens, return_hidden=True).hidden
            loss, stats = module(batch, hidden, 2)
        assert loss.dtype == torch.float32
        losses[precision] = float(loss.detach())
    assert seen == [torch.float32, torch.bfloat16]  # the joiner ran in bf16 under autocast
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.05)


def test_bf16_compress_trains_on_cpu(tiny_workdir, tiny_teacher, tmp_path):
    """LRF truncates the teacher's weights; in bf16 the student's RNN-T loss falls over the
    pruning stage's log intervals (measured: 59.1, 57.7, 54.8 at steps 10, 20, 30)."""
    cfg = CompressConfig(preset="tiny", method="lrf", rank_ratio=0.3, kd_weight=1.0, steps=30)
    logged: list[tuple[int, dict]] = []
    ctx = TrainerContext(precision="bf16", on_log=lambda step, m: logged.append((step, m)))
    res = compress(cfg, tiny_workdir, tmp_path / "out", tiny_teacher["model_dir"], ctx)
    rnnt = [m["train/loss_rnnt"] for step, m in logged if step <= 30]
    print("bf16 lrf compress, RNN-T loss per log interval:", [round(x, 2) for x in rnnt])
    assert len(rnnt) == 3 and all(map(math.isfinite, rnnt))
    assert rnnt[-1] < 0.96 * rnnt[0]
    assert 0.0 <= res["wer_test"] <= 1.5  # evaluated (the tiny teacher's WER is ~100 %)
