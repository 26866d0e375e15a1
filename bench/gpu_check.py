"""One prepared GPU check (issue 13): the training and evaluation paths on CUDA, one JSON
line per check on stdout: {"check", "ok", "seconds", "device", "details"}.

Usage:
    # here, on the CPU: build the bundle the GPU machine needs (tiny corpus, its features
    # and tokenizer, the tiny teacher) under bench/gpu_bundle/ (git-ignored, ~10 MB)
    .venv/bin/python bench/gpu_check.py --prepare
    # a dry run of every check on the CPU, small shapes
    .venv/bin/python bench/gpu_check.py --device cpu
    # on the GPU machine (torch, no Ray, no network), carrying bench/gpu_bundle:
    python bench/gpu_check.py --device cuda

Checks: `compress` of the tiny preset (l0 joint, lrf streaming, l0 sequential); `evaluate`
greedy, beam and streaming; a 2-rank DDP `compress` (two processes on one device, gloo);
`p7`: the paper model's bf16 training step through the real trainer (`fit`), its MFU from
counted FLOPs and `peak_bf16`; `peak_memory`: the paper preset's step at the `max_frames`
the estimator picks for a 24 GB device, `max_memory_allocated` vs the estimate
(`kdprune.train.memory`). Under 8 minutes on one H200. Ray is never imported (an import of
it fails here on purpose: the GPU machine has none).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib.abc
import io
import json
import math
import shutil
import socket
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bench" / "gpu_bundle"
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]  # kdprune from the tree (not installed there)


class _NoRay(importlib.abc.MetaPathFinder):
    """Makes `import ray` fail: nothing this script runs may need Ray."""

    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(f"gpu_check runs without Ray, but {name} was imported")
        return None


sys.meta_path.insert(0, _NoRay())

import torch  # noqa: E402

from kdprune.cli import main as kdprune_main  # noqa: E402


def emit(check: str, ok: bool, seconds: float, device: str, details: dict) -> None:
    line = {"check": check, "ok": ok, "seconds": round(seconds, 1), "device": device}
    print(json.dumps(line | {"details": details}), flush=True)


def run_check(name: str, device: str, fn) -> dict | None:
    """Run one check, emit its line (ok false with the error on failure)."""
    t0 = time.perf_counter()
    try:
        details = fn()
    except Exception as e:  # a failed check is reported, the others still run
        traceback.print_exc()
        emit(name, False, time.perf_counter() - t0, device, {"error": f"{type(e).__name__}: {e}"})
        return None
    emit(name, bool(details.pop("ok", True)), time.perf_counter() - t0, device, details)
    return details


def cli(*argv: str) -> dict:
    """`kdprune ARGV` in this process; its last stdout line (DESIGN §3) as a dict."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = kdprune_main(list(argv))
    if rc != 0:
        raise RuntimeError(f"kdprune {argv[0]} exited with {rc}")
    return json.loads(out.getvalue().strip().splitlines()[-1])


# --- the bundle ------------------------------------------------------------------------


def prepare_bundle() -> None:
    """Tiny corpus (synthesised with espeak-ng/flite: CPU side only), tokenizer, teacher
    and features under BUNDLE/work; BUNDLE/bundle.json names them relative to BUNDLE."""
    from kdprune.prepare import prepare

    work = BUNDLE / "work"
    data = prepare("tiny", work, device="cpu")
    rel = {k: str(Path(v).resolve().relative_to(BUNDLE)) for k, v in data.manifests.items()}
    info = {"manifests": rel, "teacher": str(data.teacher_dir.resolve().relative_to(BUNDLE))}
    (BUNDLE / "bundle.json").write_text(json.dumps(info, indent=1))
    for junk in ("mlflow.db", "mlartifacts"):
        shutil.rmtree(work / junk, ignore_errors=True)
    size = sum(f.stat().st_size for f in BUNDLE.rglob("*") if f.is_file())
    print(json.dumps({"bundle": str(BUNDLE), "megabytes": round(size / 1e6, 1), **info}))


def bundle() -> dict:
    path = BUNDLE / "bundle.json"
    if not path.exists():
        raise SystemExit(f"{path} missing: run `python bench/gpu_check.py --prepare` first")
    return json.loads(path.read_text())


# --- compress, evaluate, DDP ---------------------------------------------------------------

COMPRESS_RUNS = {
    "compress_l0_joint": ("--method", "l0", "--schedule", "joint"),
    "compress_lrf_streaming": ("--method", "lrf", "--streaming"),
    "compress_l0_sequential": ("--method", "l0", "--schedule", "sequential"),
}


def check_compress(device: str, args: tuple[str, ...], out: Path) -> dict:
    work = str(BUNDLE / "work")
    res = cli("compress", "--preset", "tiny", "--workdir", work, "--device", device,
              "--out", str(out), *args)  # fmt: skip
    keys = ("wer_dev", "wer_test", "params_ratio", "achieved_sparsity", "latency_ms_per_audio_s")
    return {"ok": math.isfinite(res["wer_test"]), "model_dir": res["model_dir"]} | {
        k: res.get(k) for k in keys
    }


def check_evaluate(device: str, model: str, manifest: Path, *flags: str) -> dict:
    res = cli("evaluate", "--model", model, "--manifest", str(manifest), "--device", device, *flags)
    keys = ("wer", "num_utterances", "latency_ms_per_audio_s", "rtf", "device")
    return {"ok": res["num_utterances"] > 0 and res["device"].startswith(device)} | {
        k: res.get(k) for k in keys
    }


def _ddp_rank(rank: int, port: int, device: str, out: str, results: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from kdprune.compress import CompressConfig, TrainerContext, compress

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)  # fmt: skip
    try:  # gloo: NCCL refuses two ranks on one GPU
        ctx = TrainerContext(rank=rank, world_size=2, device=device,
                             wrap_model=DistributedDataParallel)  # fmt: skip
        cfg = CompressConfig(preset="tiny", method="l0", schedule="sequential")
        res = compress(cfg, BUNDLE / "work", out_dir=Path(out), ctx=ctx)
        Path(results, f"rank{rank}.json").write_text(json.dumps(res, default=str))
    finally:
        dist.destroy_process_group()


def check_ddp(device: str, out: Path) -> dict:
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = out / "ranks"
    results.mkdir(parents=True)
    mp.spawn(_ddp_rank, args=(port, device, str(out / "model"), str(results)), nprocs=2)
    ranks = [json.loads((results / f"rank{r}.json").read_text()) for r in (0, 1)]
    same = ranks[0]["wer_test"] == ranks[1]["wer_test"]
    return {"ok": same, "world_size": 2, "backend": "gloo", "schedule": "sequential",
            "wer_test": ranks[0]["wer_test"], "ranks_agree": same}  # fmt: skip


# --- the paper model's trainer step: P7 and peak memory ------------------------------------


def synthetic_set(n: int, frames: int, tokens: int, n_mels: int):
    """`n` equal utterances of random features (every planned batch has the same shape) and
    transcripts of `tokens` single-letter words, for the trainer's own batching."""
    from kdprune.data.features import FeatureSet
    from kdprune.data.manifest import Utterance

    feats = torch.randn(frames, n_mels, generator=torch.Generator().manual_seed(0))
    text = " ".join("abcdefghij"[i % 10] for i in range(tokens))
    utts = [Utterance(audio_filepath="-", duration=frames / 100, text=text) for _ in range(n)]
    return FeatureSet(utts, [frames] * n, lambda i: feats)


class LetterTokenizer:
    """One token per character (the trainer only needs `encode`)."""

    vocab_size = 32

    def encode(self, text: str) -> list[int]:
        return [ord(c) % 31 for c in text]


def paper_steps(device: str, max_frames: int, frames: int, steps: int) -> dict:
    """`steps` real trainer steps (`fit`: bf16 autocast on CUDA, RNN-T + CTC, AdamW) of the
    paper model on batches of `max_frames`: FLOPs of one step, the median step time after
    warm-up, and the peak memory of the timed steps."""
    from torch.utils.flop_counter import FlopCounterMode

    from kdprune.models.transducer import Transducer
    from kdprune.presets import get_preset
    from kdprune.train.loop import fit
    from kdprune.train.losses import asr_loss
    from kdprune.train.memory import LABELS_PER_FRAME

    preset = get_preset("paper")
    tokens = math.ceil(frames * LABELS_PER_FRAME)
    torch.manual_seed(0)
    net = Transducer(preset.model_config()).to(device)
    cfg = replace(preset.finetune, max_frames=max_frames, eval_every=0, log_every=10**6,
                  checkpoint_every=10**6)  # fmt: skip
    data = synthetic_set(4 * max(1, max_frames // frames) * (steps + 1), frames, tokens, 80)
    stamps: list[float] = []

    def compute_loss(batch, step):
        if device == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        r = asr_loss(net, batch, batch.feats, cfg.ctc_weight)
        return r.loss, {}

    def train(n: int) -> None:
        opt = torch.optim.AdamW(net.parameters(), lr=1e-5)
        fit(net, compute_loss, opt, data, LetterTokenizer(), replace(cfg, max_steps=n),
            device=device, data_workers=0)  # fmt: skip

    with FlopCounterMode(display=False) as fc:
        train(1)
    flops = fc.get_total_flops()
    stamps.clear()
    net.zero_grad(set_to_none=True)  # the measured steps start as fit's do: no gradients
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    else:  # freed heap pages back to the system, then reset the RSS peak (VmHWM)
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
    base = _allocated(device)
    train(steps)
    if device == "cuda":
        torch.cuda.synchronize()
    stamps.append(time.perf_counter())
    step_s = statistics.median(b - a for a, b in zip(stamps[1:], stamps[2:], strict=False))
    batch = min(cfg.max_batch, max_frames // frames)
    weights = 4 * sum(p.numel() for p in net.parameters())  # allocated before the baseline
    return {"flops": flops, "step_s": step_s, "peak": _peak(device) - base + weights,
            "batch": batch, "frames": frames, "tokens": tokens}  # fmt: skip


def _allocated(device: str) -> int:
    """Bytes in use now: the CUDA allocator's, or this process's RSS."""
    if device == "cuda":
        return torch.cuda.memory_allocated()
    return _status("VmRSS:")


def _peak(device: str) -> int:
    return torch.cuda.max_memory_allocated() if device == "cuda" else _status("VmHWM:")


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def check_p7(device: str, dev_name: str, frames: int, max_frames: int, steps: int) -> dict:
    from compression import peak_bf16

    r = paper_steps(device, max_frames, frames, steps)
    peak = peak_bf16(dev_name) if device == "cuda" else None
    achieved = r["flops"] / r["step_s"]
    return {"mfu": round(achieved / peak, 4) if peak else None, "goal": ">= 0.35",
            "achieved_tflops": round(achieved / 1e12, 3), "peak_tflops": peak / 1e12 if peak else None,
            "flops_per_step": r["flops"], "step_s": round(r["step_s"], 4), "batch": r["batch"],
            "frames": frames, "max_frames": max_frames, "precision": "bf16" if device == "cuda" else "fp32",
            "through": "kdprune.train.loop.fit"}  # fmt: skip


def check_peak(device: str, frames: int, memory_gb: float, steps: int) -> dict:
    """The paper step at the max_frames picked for a `memory_gb` device, measured (above the
    allocation before the steps, plus the fp32 weights) vs estimated."""
    from kdprune.presets import get_preset
    from kdprune.train.memory import StepShape, estimate_step, max_frames_for

    preset, cuda = get_preset("paper"), device == "cuda"
    model = preset.model_config()
    kw = {"precision": "bf16" if cuda else "fp32", "device_type": device}
    mf = max_frames_for(int(memory_gb * 1e9), model, utt_frames=frames,
                        max_batch=preset.finetune.max_batch, **kw)  # fmt: skip
    r = paper_steps(device, mf, frames, steps)
    shape = StepShape(batch=r["batch"], frames=frames, labels=r["tokens"])
    est, measured = estimate_step(model, shape, **kw), r["peak"]
    # the estimate leaves the headroom, and what was measured fits 22 GB of 24 (11/12)
    ok = est.total <= 0.85 * memory_gb * 1e9 and measured <= memory_gb * 1e9 * 11 / 12
    return {"ok": ok, "device_memory_gb": memory_gb,
            "max_frames": mf, "batch": r["batch"], "frames": frames,
            "estimate_gb": est.to_dict(), "measured_gb": round(measured / 1e9, 3),
            "estimate_over_measured": round(est.total / measured, 3),
            "how": "max_memory_allocated" if cuda else "RSS peak"}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prepare", action="store_true", help="build bench/gpu_bundle (CPU)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    ap.add_argument("--only", default=None, help="comma list of check names (default: all)")
    args = ap.parse_args(argv)
    if args.prepare:
        prepare_bundle()
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked but CUDA is not available")
    dev, info = args.device, bundle()
    if dev == "cpu":  # big tensors mmapped and returned when freed, so RSS follows use
        ctypes.CDLL("libc.so.6").mallopt(-3, 65536)  # M_MMAP_THRESHOLD
    dev_name = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
    only = set(args.only.split(",")) if args.only else None
    want = lambda n: only is None or n in only  # noqa: E731
    out = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    models: dict[str, str] = {}
    for name, flags in COMPRESS_RUNS.items():
        if want(name):
            res = run_check(name, dev, lambda f=flags, n=name: check_compress(dev, f, out / n))
            if res:
                models[name] = res["model_dir"]
    test = BUNDLE / info["manifests"]["test"]
    teacher = str(BUNDLE / info["teacher"])
    evals = {
        "evaluate_greedy": (models.get("compress_l0_joint", teacher),),
        "evaluate_beam": (models.get("compress_l0_joint", teacher), "--beam", "4"),
        "evaluate_streaming": (models.get("compress_lrf_streaming", teacher), "--streaming"),
    }
    for name, (model, *flags) in evals.items():
        if want(name):
            run_check(name, dev, lambda m=model, f=flags: check_evaluate(dev, m, test, *f))
    if want("ddp_2rank"):
        run_check("ddp_2rank", dev, lambda: check_ddp(dev, out / "ddp"))
    cuda = dev == "cuda"
    # CPU: small shapes (2 utterances of 4 s); CUDA: 12 s utterances as the paper corpus
    frames = 1201 if cuda else 401
    if want("p7"):
        mf = 32 * frames if cuda else 2 * frames
        run_check("p7", dev, lambda: check_p7(dev, dev_name, frames, mf, 6 if cuda else 3))
    if want("peak_memory"):
        gb = 24.0 if cuda else 1.5
        run_check("peak_memory", dev, lambda: check_peak(dev, frames, gb, 3 if cuda else 2))
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
