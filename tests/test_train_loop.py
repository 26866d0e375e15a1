"""The training loop survives non-finite losses (skipped, counted) and fails cleanly past a
threshold; an interrupted run resumes from its checkpoint to the same final weights."""

import pytest
import torch

from kdprune.data.features import FeatureSet
from kdprune.data.manifest import Utterance
from kdprune.train.loop import NonFiniteLossError, TrainConfig, fit


def _toy_set(n: int = 12) -> FeatureSet:
    g = torch.Generator().manual_seed(0)
    utts = [Utterance(audio_filepath=__file__, duration=1.0, text="x") for _ in range(n)]  # type: ignore[arg-type]
    feats = [torch.randn(20 + i, 4, generator=g) for i in range(n)]
    return FeatureSet(utts, [f.shape[0] for f in feats], feats.__getitem__)


def _setup(steps: int):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    cfg = TrainConfig(
        max_steps=steps,
        warmup_steps=1,
        max_frames=80,
        max_batch=4,
        eval_every=0,
        log_every=100,
        checkpoint_every=3,
        max_bad_steps=2,
    )
    return model, opt, cfg


def _loss(model, poison: set[int]):
    def compute(batch, step):
        loss = model(batch.feats).pow(2).mean()
        if step in poison:
            loss = loss * float("nan")
        return loss, {}

    return compute


def test_non_finite_losses_are_skipped_and_counted():
    model, opt, cfg = _setup(8)
    res = fit(model, _loss(model, {2, 5}), opt, _toy_set(), None, cfg)
    assert res.skipped_steps == 2 and res.steps == 8
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_too_many_non_finite_losses_fail_the_run():
    model, opt, cfg = _setup(8)
    with pytest.raises(NonFiniteLossError, match="non-finite"):
        fit(model, _loss(model, {1, 2, 3, 4}), opt, _toy_set(), None, cfg)


def test_resume_reaches_the_same_weights(tmp_path):
    model, opt, cfg = _setup(9)
    fit(model, _loss(model, set()), opt, _toy_set(), None, cfg)
    reference = [p.detach().clone() for p in model.parameters()]
    # The same run crashes at step 6 (after its step-6 checkpoint), then is resumed.
    model, opt, cfg = _setup(9)

    def crashing(batch, step):
        if step == 6:
            raise RuntimeError("worker died")
        return _loss(model, set())(batch, step)

    with pytest.raises(RuntimeError, match="worker died"):
        fit(model, crashing, opt, _toy_set(), None, cfg, ckpt_dir=tmp_path)
    model, opt, _ = _setup(9)
    res = fit(model, _loss(model, set()), opt, _toy_set(), None, cfg, ckpt_dir=tmp_path)
    assert res.steps == 9
    for p, r in zip(model.parameters(), reference, strict=True):
        assert torch.allclose(p, r, atol=1e-6)


def test_constant_lr_groups_skip_the_schedule():
    """l0 gates and λ keep their LR while the weights' LR warms up and decays."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    gate = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW(
        [
            {"params": model.parameters(), "lr": 1e-2},
            {"params": [gate], "lr": 0.1, "constant_lr": True},
        ]
    )
    _, _, cfg = _setup(6)

    def compute(batch, step):
        return model(batch.feats).pow(2).mean() + gate.sum() ** 2, {}

    fit(model, compute, opt, _toy_set(), None, cfg)
    weights, gates = opt.param_groups
    assert weights["lr"] < 0.5 * 1e-2  # cosine-decayed by the last step
    assert gates["lr"] == 0.1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_checkpoint_restores_the_cuda_rng(tmp_path):
    """Gate samples, dropout and dynamic chunks drawn on the GPU resume as unbroken."""
    from kdprune.train.checkpoint import load_checkpoint, save_checkpoint

    model, opt, _ = _setup(1)
    torch.cuda.manual_seed_all(0)
    torch.rand(3, device="cuda")
    save_checkpoint(tmp_path, model, opt, {"step": 0})
    after = torch.rand(3, device="cuda")
    torch.rand(5, device="cuda")  # move the generator on
    load_checkpoint(tmp_path, model, opt)
    assert torch.equal(torch.rand(3, device="cuda"), after)
