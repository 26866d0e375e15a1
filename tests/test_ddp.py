"""DDP on the CPU (gloo on 127.0.0.1, one process per rank via torch.multiprocessing):

- every stage of every method x schedule x streaming gives a gradient to every parameter
  it leaves trainable (what DDP's reducer waits for), the RNN-T head frozen in
  task-agnostic pruning and unfrozen after;
- 2-worker `compress` runs finish for the sequential and joint schedules (the models the
  ranks end with are identical, rank 0 writes, every rank returns the metrics);
- 2 workers match 1 worker on the same global batch after a few steps;
- a non-finite loss on one rank makes every rank skip that step.
The ranks use the `TrainerContext.wrap_model` hook with torch's DistributedDataParallel,
as Ray Train's `prepare_model` does on the CPU.
"""

from __future__ import annotations

import socket
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from kdprune.compress import CompressConfig, TrainerContext, compress
from kdprune.compress.config import compress_recipe
from kdprune.compress.stage import freeze, frozen, stage_optimiser
from kdprune.compress.student import StudentLoss, build_student
from kdprune.contract import METHODS, SCHEDULES
from kdprune.data.batching import Batch, collate
from kdprune.data.features import FeatureSet
from kdprune.data.manifest import Utterance
from kdprune.models.model_dir import load_model_dir
from kdprune.prepare import prepare
from kdprune.train.loop import TrainConfig, fit, train_step
from kdprune.train.precision import Amp

WORLD = 2
RUN = CompressConfig(preset="tiny", kd_weight=1.0, target_sparsity=0.5, rank_ratio=0.4, steps=4)
RUN = replace(RUN, chunk_size=4, left_chunks=1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(fn, *args) -> None:
    """Run fn(rank, port, *args) on WORLD gloo ranks; a rank that raises fails the test
    (a rank left waiting in a collective times out after 2 minutes instead of hanging)."""
    mp.spawn(fn, args=(_free_port(), *args), nprocs=WORLD, join=True)


def _init(rank: int, port: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=WORLD,
        timeout=timedelta(minutes=2),
    )


@pytest.fixture(scope="module")
def tiny_data(tiny_workdir, tiny_teacher):
    """The tiny teacher and its features, built once here (not raced by the ranks)."""
    return prepare("tiny", tiny_workdir, teacher=tiny_teacher["model_dir"])


def _batch(fs: FeatureSet, tok, idx: list[int], frames: int | None = None) -> Batch:
    """Real utterances, cropped to `frames` (equal lengths: no padding, so per-rank means
    of per-utterance and per-frame losses average to the global batch's)."""
    b = collate(fs, idx, tok)
    if frames is None:
        return b
    u = int(b.target_lens.max())
    lens = torch.full_like(b.feat_lens, frames)
    return Batch(b.feats[:, :frames], lens, b.targets[:, :u], b.target_lens, b.texts, b.indices)


# -- every trained parameter gets a gradient -----------------------------------------------
@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("method", METHODS)
def test_every_trained_parameter_gets_a_gradient(tiny_data, method, schedule, streaming):
    cfg = replace(RUN, method=method, schedule=schedule, streaming=streaming)
    teacher = tiny_data.teacher.model
    freeze(teacher)
    torch.manual_seed(0)
    student, state = build_student(cfg, teacher, compress_recipe(cfg))
    batch = _batch(tiny_data.train, tiny_data.tokenizer, list(range(4)))
    sequential = schedule == "sequential"
    for use_asr, lagrangian in ((not sequential, state.lagrangian), (True, None)):  # 2 stages
        module = StudentLoss(student, teacher, lagrangian, 1.0, use_asr, 0.3)
        idle = {id(p) for m in module.idle_modules() for p in m.parameters()}
        assert bool(idle) == (not use_asr)
        with frozen(module.idle_modules()):
            module.zero_grad(set_to_none=True)
            with torch.no_grad():
                hidden = teacher.encode(batch.feats, batch.feat_lens, return_hidden=True).hidden
            loss, _ = module(batch, hidden, 0)
            loss.backward()
            trained = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
            assert not any(id(p) in idle for _, p in trained)
            missing = [n for n, p in trained if p.grad is None]
            assert not missing, f"no gradient in this stage: {missing}"
        assert all(p.requires_grad for m in module.idle_modules() for p in m.parameters())


# -- 2-worker compress runs ----------------------------------------------------------------
def _compress_rank(rank: int, port: int, cfg, workdir, teacher_dir, out: Path) -> None:
    _init(rank, port)
    ctx = TrainerContext(
        rank=rank, world_size=WORLD, device="cpu", wrap_model=DistributedDataParallel
    )
    res = compress(cfg, workdir, out_dir=out, teacher_dir=teacher_dir, ctx=ctx)
    res.pop("model_dir")
    # The ranks' students after training: equal if every update was the same everywhere.
    model = load_model_dir(out / "model").model if rank == 0 else None
    torch.save({"metrics": res, "model": model}, out / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.parametrize(
    "method,schedule,streaming", [("l0", "sequential", False), ("lrf", "joint", True)]
)
def test_two_worker_compress_finishes(
    tiny_workdir, tiny_teacher, tiny_data, method, schedule, streaming, tmp_path
):
    cfg = replace(RUN, method=method, schedule=schedule, streaming=streaming)
    out = tmp_path / "out"
    _spawn(_compress_rank, cfg, tiny_workdir, Path(tiny_teacher["model_dir"]), out)
    r0, r1 = (torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD))
    assert r0["metrics"] == r1["metrics"]  # rank 0's evaluation, handed to every rank
    assert (out / "metrics.json").exists() and (out / "utterances_test.jsonl").exists()
    assert r0["metrics"]["achieved_sparsity"] > 0.2


# -- 2 workers == 1 worker on the same global batch ----------------------------------------
STEPS = 3
# fp32 throughout. The ranks' gradients are averaged by an all-reduce whose summation order
# differs from the one-process backward over the whole batch (rounding ~1e-7 relative), and
# Adam divides each gradient by its running RMS, so an element whose gradient is ~0 can
# take a different step of up to ~lr. 1e-4 (5 % of the 2e-3 LR) bounds that after 3 steps;
# a wrong reduction (a sum instead of a mean, a rank's batch lost) moves weights by ~lr.
ATOL = 1e-4


def _setup(teacher_dir: Path):
    torch.manual_seed(0)
    teacher = load_model_dir(teacher_dir).model
    freeze(teacher)
    cfg = replace(RUN, method="l0", schedule="joint")
    recipe = compress_recipe(cfg)
    student, state = build_student(cfg, teacher, recipe)
    module = StudentLoss(student, teacher, state.lagrangian, 1.0, True, recipe.train.ctc_weight)
    opt = stage_optimiser(module, state, recipe)
    for g in opt.param_groups:
        g["base_lr"] = g["lr"]
    module.train()
    # What depends on the batch's split by design is left out: batch-norm statistics are
    # per rank (not synchronised, as torch DDP without SyncBatchNorm), so the running ones
    # are used; dropout (the predictor's) draws one mask per utterance from each rank's
    # generator, so it is off. Everything else (gates, KD, RNN-T, CTC, Lagrangian,
    # clipping, AdamW) is compared.
    for m in module.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.Dropout)):
            m.eval()
    return teacher, module, opt, replace(recipe.train, max_steps=STEPS + 1)


def _steps(teacher, wrapped, opt, tcfg, batches, world: int) -> list[float]:
    def compute_loss(batch, step):
        with torch.no_grad():
            hidden = teacher.encode(batch.feats, batch.feat_lens, return_hidden=True).hidden
        return wrapped(batch, hidden, step)

    amp = Amp.for_device("fp32", "cpu")
    return [
        train_step(compute_loss, opt, b, s, tcfg, amp, world).loss for s, b in enumerate(batches)
    ]


def _half(b: Batch, rank: int) -> Batch:
    n = b.feats.shape[0] // WORLD
    sl = slice(rank * n, (rank + 1) * n)
    u = int(b.target_lens[sl].max())
    return Batch(
        b.feats[sl],
        b.feat_lens[sl],
        b.targets[sl, :u],
        b.target_lens[sl],
        b.texts[sl],
        b.indices[sl],
    )


def _equivalence_rank(rank: int, port: int, teacher_dir, batches, out: Path) -> None:
    _init(rank, port)
    teacher, module, opt, tcfg = _setup(teacher_dir)
    losses = _steps(
        teacher,
        DistributedDataParallel(module),
        opt,
        tcfg,
        [_half(b, rank) for b in batches],
        WORLD,
    )
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    torch.save({"losses": losses, "state": state}, out / f"rank{rank}.pt")
    dist.destroy_process_group()


def test_two_workers_match_one_worker_on_the_same_global_batch(tiny_teacher, tiny_data, tmp_path):
    fs, tok = tiny_data.train, tiny_data.tokenizer
    frames = min(fs.num_frames[: 4 * STEPS])
    batches = [_batch(fs, tok, list(range(4 * s, 4 * s + 4)), frames) for s in range(STEPS)]
    teacher_dir = Path(tiny_teacher["model_dir"])
    _spawn(_equivalence_rank, teacher_dir, batches, tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]

    teacher, module, opt, tcfg = _setup(teacher_dir)
    start = {k: v.detach().clone() for k, v in module.state_dict().items()}
    losses = _steps(teacher, module, opt, tcfg, batches, 1)

    ddp_losses = [sum(r["losses"][s] for r in ranks) / WORLD for s in range(STEPS)]
    assert ddp_losses == pytest.approx(losses, rel=1e-5)
    moved, worst = 0.0, 0.0
    for k, v in module.state_dict().items():
        assert torch.equal(ranks[0]["state"][k], ranks[1]["state"][k]), k  # ranks in lockstep
        if v.is_floating_point():
            moved = max(moved, float((v - start[k]).abs().max()))
            worst = max(worst, float((ranks[0]["state"][k] - v).abs().max()))
    print(f"2 vs 1 worker after {STEPS} steps: max |diff| {worst:.3g}, max update {moved:.3g}")
    assert moved > 10 * ATOL  # the weights did move
    assert worst <= ATOL


# -- a non-finite loss on one rank ---------------------------------------------------------
def _toy_set(n: int = 16) -> FeatureSet:
    g = torch.Generator().manual_seed(0)
    utts = [Utterance(audio_filepath=__file__, duration=1.0, text="x") for _ in range(n)]  # type: ignore[arg-type]
    feats = [torch.randn(20 + i, 4, generator=g) for i in range(n)]
    return FeatureSet(utts, [f.shape[0] for f in feats], feats.__getitem__)


POISONED = 2  # the step whose loss is NaN on rank 1 only


def _nonfinite_rank(rank: int, port: int, out: Path) -> None:
    _init(rank, port)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    ddp = DistributedDataParallel(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    cfg = TrainConfig(max_steps=5, warmup_steps=1, max_frames=80, max_batch=4, log_every=100)
    cfg = replace(cfg, eval_every=0, checkpoint_every=1000, max_bad_steps=2)
    seen: list[tuple[int, float]] = []

    def compute_loss(batch, step):
        loss = ddp(batch.feats).pow(2).mean()
        if rank == 1 and step == POISONED:
            loss = loss * float("nan")
        seen.append((step, float(model.weight.detach().sum())))
        return loss, {}

    res = fit(
        model, compute_loss, opt, _toy_set(), None, cfg, rank=rank, world_size=WORLD, data_workers=0
    )
    torch.save(
        {
            "skipped": res.skipped_steps,
            "steps": res.steps,
            "seen": seen,
            "weight": model.weight.detach(),
        },
        out / f"rank{rank}.pt",
    )
    dist.destroy_process_group()


def test_non_finite_loss_on_one_rank_is_skipped_by_every_rank(tmp_path):
    _spawn(_nonfinite_rank, tmp_path)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD))
    assert r0["skipped"] == r1["skipped"] == 1
    assert r0["steps"] == r1["steps"] == 5
    assert torch.equal(r0["weight"], r1["weight"])
    w = dict(r0["seen"])  # the weights each step started from: unchanged by the skipped step
    assert w[POISONED + 1] == w[POISONED] and w[POISONED] != w[POISONED - 1]
