"""Compression benchmarks (DESIGN §3): one JSON line per measure on stdout.

Usage:
    .venv/bin/python bench/compression.py [--device cpu|cuda] [--threads 1]
        [--measures P1,P2,P4[,P7]] [--rounds 25] [--step-rounds 20]

  P1  materialised pruned encoder latency ÷ a dense encoder built directly with the same
      per-layer dims (goal ≤ 1.05): materialisation leaves no overhead behind.
  P2  dense teacher encoder latency ÷ pruned encoder latency at 50 % of the encoder's
      parameters removed (1 − materialised ÷ teacher encoder params, front end included),
      batch 1, 10 s of audio (goal ≥ 1.8); the 25/50/75 % curve (l0 and LRF at equal
      parameter counts), the front end's share of each latency and the counted-FLOPs
      ratios are in details.
  P4  training-step time (RNN-T + CTC loss, backward, AdamW) of the l0-gated student ÷ the
      dense student (goal ≤ 1.25; its step includes the Lagrangian term) and of the LRF
      student at 50 % ÷ dense (goal ≤ 1.0).
  P7  (cuda; on by default there) model-FLOPs utilisation of a dense conformer + RNN-T
      training step under bf16 autocast, FLOPs from torch.utils.flop_counter (goal ≥ 0.35).

All models of one measure are timed side by side in interleaved rounds (random order per
round) so drift and background load hit them alike; ratios use each model's best round
(load only adds time), with the median of per-round ratios in details. Shapes: the `demo`
preset (P1, P2, P4) and the `paper` preset (P7; the demo model is far too small to fill a
GPU).
Pruned structures for P1/P2 are made without training: the same fraction of units (heads,
FFN units, conv-module channels and the Conv2d front end's channels, chosen at random) is
kept in every gate, the fraction found by bisection so that the materialised encoder has
the target sparsity. LRF factorises the blocks' projections only (no front-end treatment).
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import re
import statistics
import sys
import time

import torch

from kdprune.contract import COMPRESSING_METHODS
from kdprune.data.batching import Batch
from kdprune.eval.latency import measure_latency, sync
from kdprune.models.conformer import ConformerEncoder
from kdprune.models.transducer import ModelConfig, Transducer
from kdprune.presets import get_preset
from kdprune.pruning import (
    Lagrangian,
    PruneConfig,
    attach_gates,
    eval_params,
    factorise,
    iter_gates,
    lagrangian_step,
    materialise,
    param_groups,
    rank_ratio_for_sparsity,
)
from kdprune.train.losses import asr_loss

SPARSITIES = (0.25, 0.5, 0.75)
# Dense bf16 tensor-core peaks (FLOP/s, no structured sparsity) from NVIDIA's data sheets,
# matched against torch.cuda.get_device_name() as whole words, most specific first: the
# PCIe and NVL boards of a chip run lower clocks (and power) than its SXM board, and "L4"
# must not match "L40S". The A10G (AWS's variant of the A10) has no published sheet: P7
# reports no MFU for it rather than borrow the A10's figure.
PEAK_BF16: tuple[tuple[str, float | None], ...] = (
    (r"H100.*(PCIe|PCIE)", 756e12),
    (r"H100.*NVL", 835e12),
    (r"H100", 989e12),  # SXM5 ("NVIDIA H100 80GB HBM3")
    (r"H200.*NVL", 835e12),
    (r"H200", 989e12),  # SXM
    (r"A100", 312e12),  # SXM4 and PCIe alike
    (r"L40S", 362e12),
    (r"L40", 181e12),
    (r"L4", 121e12),
    (r"A10G", None),
    (r"A10", 125e12),
)


def peak_bf16(device_name: str) -> float | None:
    """Dense bf16 peak of a CUDA device by its name; None when unknown (then no MFU)."""
    for pattern, peak in PEAK_BF16:
        if re.search(rf"(?<![A-Za-z0-9]){pattern}(?![A-Za-z0-9])", device_name):
            return peak
    return None


def emit(measure: str, value, goal: str, unit: str, device: str, details: dict) -> None:
    rec = {"measure": measure, "value": value, "goal": goal, "unit": unit}
    print(json.dumps({**rec, "device": device, "details": details}), flush=True)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def device_name(device: str, threads: int) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"cpu ({threads} thread{'s' if threads > 1 else ''})"


@torch.no_grad()
def pruned_encoder(teacher: ConformerEncoder, sparsity: float, seed: int = 0) -> ConformerEncoder:
    """A materialised encoder keeping the same random fraction of units in every module."""
    gen = torch.Generator().manual_seed(seed)
    student = copy.deepcopy(teacher)
    attach_gates(student, PruneConfig())
    gates = list(iter_gates(student))
    order = [torch.randperm(g.n, generator=gen) for g in gates]
    dense = teacher.num_params()

    def set_keep(frac: float) -> float:
        for g, perm in zip(gates, order, strict=True):
            k = max(1, round(frac * g.n))
            g.log_alpha.fill_(-20.0)
            g.log_alpha[perm[:k]] = 20.0
        return 1 - eval_params(student) / dense

    lo, hi = 0.0, 1.0
    for _ in range(20):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if set_keep(mid) > sparsity else (lo, mid)
    best = min((lo, hi), key=lambda f: abs(set_keep(f) - sparsity))
    set_keep(best)
    return materialise(student.eval()).eval()


def lrf_encoder(teacher: ConformerEncoder, sparsity: float) -> ConformerEncoder:
    student = copy.deepcopy(teacher)
    factorise(student, rank_ratio_for_sparsity(teacher, sparsity))
    return student.eval()


class Timings(dict):
    """Per-round timings of each fn. `ratio` compares the best rounds: background load on
    a shared machine only ever adds time, so the minimum is the steadiest estimate of a
    model's own cost; `paired_ratio` (median of per-round ratios) is reported beside it."""

    def best(self, k: str) -> float:
        return min(self[k])

    def ratio(self, a: str, b: str) -> float:
        return min(self[a]) / min(self[b])

    def paired_ratio(self, a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(self[a], self[b], strict=True))


def interleaved(fns: dict[str, callable], rounds: int, seed: int = 0) -> Timings:
    """Time every fn once per round, in a new random order each round (after one untimed
    warm-up call each), so drift and background load hit them alike."""
    rng = random.Random(seed)
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k in rng.sample(list(fns), len(fns)):
            times[k].append(fns[k]())
    return Timings(times)


def latency_fn(enc: ConformerEncoder, feats: torch.Tensor, device: str, runs: int, threads: int):
    """A function timing `runs` forwards (wall-clock ms per audio second). Its `cpu` list
    gets each call's CPU time of the timing thread (same unit; 1 CPU thread only): on a
    shared machine preemption adds wall time but no CPU time, so CPU-time ratios
    cross-check the wall-clock ones."""
    lens = torch.tensor([feats.shape[1]], device=device)
    audio_s = feats.shape[1] / 100.0  # 10 ms hop

    def run(_: int) -> None:
        enc(feats, lens)

    def timed() -> float:  # ms per second of audio
        lat = measure_latency(run, [audio_s] * runs, device, warmup=0, threads=threads)
        timed.cpu.append(lat.cpu_ms_per_audio_s)
        return lat.ms_per_audio_s

    timed.cpu = []
    return timed


@torch.inference_mode()
def forward_flops(enc: ConformerEncoder, feats: torch.Tensor) -> int:
    """FLOPs of one forward, counted by torch.utils.flop_counter (matmuls and convs)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        enc(feats, torch.tensor([feats.shape[1]], device=feats.device))
    return fc.get_total_flops()


def bench_latency(args, dev_name: str) -> None:
    """P1 and P2: batch-1 encoder latency on 10 s of audio."""
    torch.manual_seed(0)
    cfg = get_preset("demo").encoder
    teacher = ConformerEncoder(cfg).eval()
    dense_params = teacher.num_params()
    feats = torch.randn(1, 1000, cfg.input_dim, device=args.device)
    models = {"teacher": teacher}
    for s in SPARSITIES:
        models[f"l0_{s}"] = pruned = pruned_encoder(teacher, s)
        models[f"direct_{s}"] = ConformerEncoder(pruned.cfg).eval()
        models[f"lrf_{s}"] = lrf_encoder(teacher, s)
    models = {k: m.to(args.device) for k, m in models.items()}
    sparsity = {k: round(1 - m.num_params() / dense_params, 4) for k, m in models.items()}
    log(f"timing {len(models)} encoders x {args.rounds} rounds")
    fns = {k: latency_fn(m, feats, args.device, args.runs, args.threads) for k, m in models.items()}
    # The front ends alone: the teacher's bounded the speed-up while it was not pruned.
    for k in ("teacher", "l0_0.5"):
        front = models[k].subsampling
        fns[f"frontend_{k}"] = latency_fn(front, feats, args.device, args.runs, args.threads)
    flops = {k: forward_flops(m, feats) for k, m in models.items()}
    ms = interleaved(fns, args.rounds)
    cpu = Timings({k: fn.cpu[1:] for k, fn in fns.items()})  # [0]: the warm-up call
    cpu_ok = args.device == "cpu" and args.threads == 1  # else no CPU time is recorded
    base = {"audio_s": 10.0, "batch": 1, "threads": args.threads, "rounds": args.rounds}
    dims50 = [
        (d.num_heads, d.ffn1_dim, d.ffn2_dim, d.conv_channels) for d in models["l0_0.5"].cfg.layers
    ]
    if "P1" in args.measures:
        ratios = {s: ms.ratio(f"l0_{s}", f"direct_{s}") for s in SPARSITIES}
        emit(
            "P1",
            round(ratios[0.5], 4),
            "<= 1.05",
            "ratio",
            dev_name,
            {
                **base,
                "ratio_by_sparsity": {str(s): round(r, 4) for s, r in ratios.items()},
                "paired_median_ratio_by_sparsity": {
                    str(s): round(ms.paired_ratio(f"l0_{s}", f"direct_{s}"), 4) for s in SPARSITIES
                },
                "cpu_time_ratio_by_sparsity": {
                    str(s): round(cpu.ratio(f"l0_{s}", f"direct_{s}"), 4) for s in SPARSITIES
                }
                if cpu_ok
                else None,
                "materialised_best_ms_per_audio_s": {
                    str(s): ms.best(f"l0_{s}") for s in SPARSITIES
                },
                "direct_best_ms_per_audio_s": {str(s): ms.best(f"direct_{s}") for s in SPARSITIES},
                "layer_dims_at_0.5 (heads, ffn1, ffn2, conv)": dims50,
            },
        )
    if "P2" in args.measures:
        speed = {
            m: {str(s): round(ms.ratio("teacher", f"{m}_{s}"), 3) for s in SPARSITIES}
            for m in COMPRESSING_METHODS
        }
        emit(
            "P2",
            speed["l0"]["0.5"],
            ">= 1.8",
            "x speed-up",
            dev_name,
            {
                **base,
                "speedup_l0": speed["l0"],
                "speedup_lrf": speed["lrf"],
                "paired_median_speedup_l0": {
                    str(s): round(ms.paired_ratio("teacher", f"l0_{s}"), 3) for s in SPARSITIES
                },
                "cpu_time_speedup_l0": {
                    str(s): round(cpu.ratio("teacher", f"l0_{s}"), 3) for s in SPARSITIES
                }
                if cpu_ok
                else None,
                "achieved_sparsity": sparsity,
                "teacher_best_ms_per_audio_s": ms.best("teacher"),
                "frontend_share_of_teacher": round(ms.ratio("frontend_teacher", "teacher"), 3),
                "frontend_share_of_l0_0.5": round(ms.ratio("frontend_l0_0.5", "l0_0.5"), 3),
                "frontend_share_of_params": round(
                    sum(p.numel() for p in teacher.subsampling.parameters()) / dense_params, 4
                ),
                "frontend_channels_l0": {
                    str(s): models[f"l0_{s}"].cfg.subsampling_channels for s in SPARSITIES
                },
                # Counted forward FLOPs (torch.utils.flop_counter), teacher ÷ model: the
                # speed-up a FLOP-bound run would give.
                "flops_ratio_l0": {
                    str(s): round(flops["teacher"] / flops[f"l0_{s}"], 3) for s in SPARSITIES
                },
                "flops_ratio_lrf": {
                    str(s): round(flops["teacher"] / flops[f"lrf_{s}"], 3) for s in SPARSITIES
                },
                "teacher_encoder_params": dense_params,
            },
        )


def synthetic_batch(cfg: ModelConfig, b: int, frames: int, tokens: int, device: str) -> Batch:
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(b, frames, cfg.features.n_mels, generator=g)
    feat_lens = torch.full((b,), frames)
    feat_lens[1::2] = frames * 3 // 4  # some padding, as in real batches
    targets = torch.randint(0, cfg.vocab_size, (b, tokens), generator=g)
    target_lens = torch.full((b,), tokens)
    return Batch(feats, feat_lens, targets, target_lens, [""] * b, list(range(b))).to(device)


def step_fn(model: Transducer, batch: Batch, device: str, lag: Lagrangian | None, steps: int):
    """A function timing `steps` training steps (seconds per step)."""
    opt = torch.optim.AdamW(param_groups(model, lag, lr_weights=1e-4))
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda")
    model.train()

    def one(i: int) -> None:
        with amp:
            loss = asr_loss(model, batch, batch.feats, ctc_weight=0.3).loss
            if lag is not None:
                loss = loss + lagrangian_step(model, lag, i).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def timed() -> float:
        sync(device)
        t0 = time.perf_counter()
        for i in range(steps):
            one(i)
        sync(device)
        return (time.perf_counter() - t0) / steps

    return timed


def preset_model(device: str, preset: str = "demo") -> Transducer:
    """The preset's dense RNN-T, random weights (seed 0)."""
    torch.manual_seed(0)
    return Transducer(get_preset(preset).model_config()).to(device)


def bench_train_step(args, dev_name: str) -> None:
    """P4: per-step training time of gated and factorised students vs the dense one."""
    dense = preset_model(args.device)
    b, frames = (8, 400) if args.device == "cpu" else (64, 1600)
    batch = synthetic_batch(dense.cfg, b, frames, 20, args.device)
    gated = copy.deepcopy(dense)
    attach_gates(gated, PruneConfig())
    gated_mod = copy.deepcopy(dense)
    attach_gates(gated_mod, PruneConfig(modules=True))
    lrf = copy.deepcopy(dense)
    factorise(lrf, rank_ratio_for_sparsity(dense, 0.5))
    teacher_params = dense.encoder_params()
    fns = {
        "dense": step_fn(dense, batch, args.device, None, args.steps),
        "l0": step_fn(gated, batch, args.device, Lagrangian(teacher_params, 0.5), args.steps),
        "l0_modules": step_fn(
            gated_mod, batch, args.device, Lagrangian(teacher_params, 0.5), args.steps
        ),
        "lrf": step_fn(lrf, batch, args.device, None, args.steps),
    }
    log(f"timing {len(fns)} training steps x {args.step_rounds} rounds")
    s = interleaved(fns, args.step_rounds)
    details = {
        "batch": b,
        "frames": frames,
        "tokens": 20,
        "steps_per_round": args.steps,
        "rounds": args.step_rounds,
        "threads": args.threads,
        "best_ms_per_step": {k: round(s.best(k) * 1000, 2) for k in s},
        "l0_modules_ratio": round(s.ratio("l0_modules", "dense"), 4),
        "paired_median_ratios": {
            k: round(s.paired_ratio(k, "dense"), 4) for k in ("l0", "l0_modules", "lrf")
        },
        "lrf_ratio": round(s.ratio("lrf", "dense"), 4),
        "lrf_encoder_sparsity": round(1 - lrf.encoder_params() / teacher_params, 4),
        "bf16_autocast": args.device == "cuda",
    }
    emit("P4", round(s.ratio("l0", "dense"), 4), "<= 1.25", "ratio", dev_name, details)
    emit("P4_lrf", details["lrf_ratio"], "<= 1.0", "ratio", dev_name, details)


def bench_mfu(args, dev_name: str) -> None:
    """P7: model FLOPs (fwd+bwd, counted) ÷ (step time × peak bf16 FLOP/s)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = preset_model(args.device, args.p7_preset)
    b, frames, tokens = (args.p7_batch, 1600, 60) if args.device == "cuda" else (2, 400, 10)
    batch = synthetic_batch(model.cfg, b, frames, tokens, args.device)
    amp = torch.autocast(args.device, dtype=torch.bfloat16)
    model.train()
    with FlopCounterMode(display=False) as fc:
        with amp:
            loss = asr_loss(model, batch, batch.feats, ctc_weight=0.3).loss
        loss.backward()
    flops = fc.get_total_flops()
    timed = step_fn(model, batch, args.device, None, args.steps)
    timed()  # warm-up
    sec = statistics.median(timed() for _ in range(args.step_rounds))
    peak = peak_bf16(dev_name)
    achieved = flops / sec
    emit(
        "P7",
        round(achieved / peak, 4) if peak else None,
        ">= 0.35",
        "fraction of peak bf16",
        dev_name,
        {
            "preset": args.p7_preset,
            "batch": b,
            "frames": frames,
            "tokens": tokens,
            "flops_per_step": flops,
            "step_s": sec,
            "achieved_tflops": round(achieved / 1e12, 2),
            "peak_tflops": peak / 1e12 if peak else None,
        },
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (latency and steps)")
    ap.add_argument("--measures", default=None, help="comma list (default P1,P2,P4 [+P7 cuda])")
    ap.add_argument("--rounds", type=int, default=25, help="latency rounds (best round used)")
    ap.add_argument("--runs", type=int, default=1, help="latency runs per model per round")
    ap.add_argument("--step-rounds", type=int, default=20, help="training-step rounds")
    ap.add_argument("--steps", type=int, default=1, help="training steps per model per round")
    ap.add_argument("--p7-preset", default="paper")
    ap.add_argument("--p7-batch", type=int, default=32)
    args = ap.parse_args(argv)
    default = "P1,P2,P4,P7" if args.device == "cuda" else "P1,P2,P4"
    args.measures = set((args.measures or default).upper().split(","))
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked but CUDA is not available")
    torch.set_num_threads(args.threads)
    dev_name = device_name(args.device, args.threads)
    log(f"device: {dev_name}; measures: {sorted(args.measures)}")
    if args.measures & {"P1", "P2"}:
        bench_latency(args, dev_name)
    if "P4" in args.measures:
        bench_train_step(args, dev_name)
    if "P7" in args.measures:
        bench_mfu(args, dev_name)


if __name__ == "__main__":
    main()
