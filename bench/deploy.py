"""Real-time speed as deployments run it: the dense teacher, an l0 student and an LRF
student (50 % budgets), each exported to ONNX and decoded by onnxruntime on CPU with one
thread at batch 1, side by side with the same models in PyTorch (one thread) in one run.

Usage:
    .venv/bin/python bench/deploy.py --l0 MODEL_DIR --lrf MODEL_DIR [--teacher MODEL_DIR]
        [--manifest test.jsonl] [--max-utts N] [--int8] [--out DIR]

Without --l0 / --lrf the demo students are compressed first (`kdprune compress --preset
demo --method l0|lrf`, 50 %, KD; cached by config hash, so a second run reuses them).

Per model and runtime, over the test set (the demo's, 300 utterances, by default):
- full context: real-time factor (encoder + greedy search, each utterance alone) and WER;
- streaming (models with a streaming encoder): per-chunk latency p50 / p95 (the chunk's
  encoder call and the greedy search over its frames; chunk windows as
  `kdprune.deploy.runtime.chunk_windows` cuts them, so PyTorch's `StreamingEncoder` is fed
  the same frames per chunk), streaming RTF and WER.
Systems are timed interleaved (utterance by utterance, every system in turn), so load on
a shared machine falls on all of them alike; the first two utterances warm up, untimed.
`--int8` adds onnxruntime's dynamic int8 quantisation of the exported graphs.

One JSON line per model and runtime (`{"measure": "deploy", ...}`), then the last stdout
line: every row, the l0 / LRF ÷ teacher ratios and onnxruntime ÷ PyTorch, with the load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from kdprune.deploy.evaluate import features_for
from kdprune.deploy.runtime import GreedySearch, OnnxTransducer, chunk_windows
from kdprune.eval.decode import GreedyStream, greedy_decode
from kdprune.eval.wer import corpus_wer
from kdprune.export import export_model
from kdprune.models.model_dir import load_model_dir
from kdprune.models.streaming import StreamingEncoder

DEMO_TEACHER = Path(__file__).resolve().parents[1] / "kdprune" / "assets" / "demo_teacher"
WARMUP = 2


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class TorchSystem:
    """A model directory in PyTorch: full-context and chunk-by-chunk greedy decoding."""

    def __init__(self, model_dir: Path) -> None:
        m = load_model_dir(model_dir)
        self.model, self.tok = m.model.eval(), m.tokenizer
        self.stream = m.config.encoder.streaming and m.config.encoder.left_chunks >= 0
        sub = self.model.encoder.subsampling
        cfg = m.config.encoder
        self.windows = {"subsampling": sub.stride, "receptive_field": sub.receptive_field,
                        "chunk_size": cfg.chunk_size}  # fmt: skip

    @torch.inference_mode()
    def full(self, feats: np.ndarray) -> tuple[str, float]:
        x = torch.from_numpy(feats)
        t0 = time.perf_counter()
        enc = self.model.encode(x, torch.tensor([x.shape[1]]))
        ids = greedy_decode(self.model, enc.out, enc.lengths)[0]
        return self.tok.decode(ids), time.perf_counter() - t0

    @torch.inference_mode()
    def chunks(self, feats: np.ndarray) -> tuple[str, list[float]]:
        x, m = torch.from_numpy(feats), self.model
        stream, dec, times, fed = StreamingEncoder(m.encoder), GreedyStream(m), [], 0
        wins = chunk_windows(x.shape[1], self.windows)
        for k, (_, end) in enumerate(wins):
            t0 = time.perf_counter()
            dec.feed(stream.push(m.normaliser(x[:, fed:end]), final=k == len(wins) - 1))
            times.append(time.perf_counter() - t0)
            fed = end
        return self.tok.decode(dec.hyp), times


class OnnxSystem:
    """An export directory in onnxruntime (sessions with one thread)."""

    def __init__(self, export_dir: Path) -> None:
        self.m = OnnxTransducer(export_dir, threads=1)
        self.stream = self.m.stream is not None

    def full(self, feats: np.ndarray) -> tuple[str, float]:
        t0 = time.perf_counter()
        enc, lens = self.m.encode(feats, np.array([feats.shape[1]]))
        ids = GreedySearch(self.m, 1).feed(enc, lens)[0]
        return self.m.text(ids), time.perf_counter() - t0

    def chunks(self, feats: np.ndarray) -> tuple[str, list[float]]:
        search, times = GreedySearch(self.m, 1), []
        state = self.m.initial_stream_state(1)
        for start, end in chunk_windows(feats.shape[1], self.m.stream):
            t0 = time.perf_counter()
            out, state = self.m.encode_chunk(feats[:, start:end], state)
            search.feed(out)
            times.append(time.perf_counter() - t0)
        return self.m.text(search.hyps[0]), times


def quantised(export_dir: Path, out: Path) -> Path:
    """A copy of an export with every graph's weights dynamically quantised to int8."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(export_dir, out)
    for f in out.glob("*.onnx"):
        quantize_dynamic(str(export_dir / f.name), str(f), weight_type=QuantType.QInt8)
    return out


def student(method: str, teacher: Path, workdir: Path) -> Path:
    """The demo's 50 % student of `method` with KD (LRF: the rank ratio that leaves 50 %
    of the encoder, as sweeps/method_table.py picks it)."""
    from kdprune.compress import CompressConfig, compress
    from kdprune.pruning.lrf import rank_ratio_for_sparsity

    ratio = rank_ratio_for_sparsity(load_model_dir(teacher).model, 0.5)
    cfg = CompressConfig(preset="demo", method=method, kd_weight=1.0, target_sparsity=0.5,
                         rank_ratio=ratio)  # fmt: skip
    return Path(compress(cfg, workdir, teacher_dir=teacher)["model_dir"])


def run(systems: dict, fs, max_utts: int) -> dict[str, dict]:
    """Decode every utterance with every system in turn -> per-system figures."""
    n = min(len(fs.utts), max_utts + WARMUP) if max_utts else len(fs.utts)
    acc = {k: {"hyp": [], "full_s": 0.0, "hyp_s": [], "chunks": [], "stream_s": 0.0}
           for k in systems}  # fmt: skip
    refs, audio = [], 0.0
    for i in range(n):
        feats = fs[i].float().numpy()[None]
        timed = i >= WARMUP
        if timed:
            refs.append(fs.utts[i].text)
            audio += fs.utts[i].duration
        for name, s in systems.items():
            a = acc[name]
            hyp, dt = s.full(feats)
            if s.stream:
                shyp, times = s.chunks(feats)
            if timed:
                a["hyp"].append(hyp)
                a["full_s"] += dt
                if s.stream:
                    a["hyp_s"].append(shyp)
                    a["chunks"] += times
                    a["stream_s"] += sum(times)
        if i % 50 == 0:
            log(f"utterance {i + 1}/{n}")
    rows = {}
    for name, a in acc.items():
        row = {"rtf": a["full_s"] / audio, "wer": corpus_wer(refs, a["hyp"])[0]}
        if a["chunks"]:
            ms = np.array(a["chunks"]) * 1000
            row.update(chunk_ms_p50=float(np.percentile(ms, 50)),
                       chunk_ms_p95=float(np.percentile(ms, 95)), chunks=len(ms),
                       stream_rtf=a["stream_s"] / audio,
                       wer_streaming=corpus_wer(refs, a["hyp_s"])[0])  # fmt: skip
        rows[name] = {k: round(v, 5) if isinstance(v, float) else v for k, v in row.items()}
    return {"rows": rows, "utterances": len(refs), "audio_s": round(audio, 2)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", type=Path, default=DEMO_TEACHER)
    ap.add_argument("--l0", type=Path, default=None, help="l0 student (default: compress one)")
    ap.add_argument("--lrf", type=Path, default=None, help="LRF student (default: compress one)")
    ap.add_argument("--manifest", type=Path, default=None, help="default: the demo test set")
    ap.add_argument("--max-utts", type=int, default=0, help="0: every utterance")
    ap.add_argument("--int8", action="store_true", help="also onnxruntime int8 (dynamic)")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path("/tmp/kdprune-deploy-bench"))
    args = ap.parse_args(argv)
    from kdprune.utils import default_workdir

    torch.set_num_threads(1)
    workdir = (args.workdir or default_workdir()).resolve()
    if args.manifest is None:
        from kdprune.pipeline import synth_data

        args.manifest = synth_data("demo", workdir)["test"]
    dirs = {"teacher": args.teacher, "l0": args.l0 or student("l0", args.teacher, workdir),
            "lrf": args.lrf or student("lrf", args.teacher, workdir)}  # fmt: skip
    systems, params = {}, {}
    for name, d in dirs.items():
        exp = Path(export_model(d, "onnx", args.out / name)["export"])
        systems[f"{name}/torch"] = TorchSystem(d)
        systems[f"{name}/onnx"] = OnnxSystem(exp)
        if args.int8:
            systems[f"{name}/onnx-int8"] = OnnxSystem(quantised(exp, args.out / f"{name}-int8"))
        params[name] = systems[f"{name}/torch"].model.num_params()
    fs = features_for(systems["teacher/onnx"].m, args.manifest)
    load_before = os.getloadavg()
    log(f"timing {len(systems)} systems on {args.manifest} (load {load_before[0]:.1f})")
    res = run(systems, fs, args.max_utts)
    rows = res["rows"]
    for name, row in rows.items():
        model, runtime = name.split("/")
        print(json.dumps({"measure": "deploy", "model": model, "runtime": runtime,
                          "params": params[model], **row, "device": "cpu (1 thread)",
                          "batch": 1}), flush=True)  # fmt: skip
    ratios = {}
    for rt in ("torch", "onnx", "onnx-int8"):
        for stu in ("l0", "lrf"):
            a, b = rows.get(f"{stu}/{rt}"), rows.get(f"teacher/{rt}")
            if a and b:
                ratios[f"{stu}/teacher {rt} rtf"] = round(a["rtf"] / b["rtf"], 3)
                if "chunk_ms_p50" in a and "chunk_ms_p50" in b:
                    ratios[f"{stu}/teacher {rt} chunk p50"] = round(
                        a["chunk_ms_p50"] / b["chunk_ms_p50"], 3
                    )
    for model in dirs:
        ratios[f"{model} onnx/torch rtf"] = round(
            rows[f"{model}/onnx"]["rtf"] / rows[f"{model}/torch"]["rtf"], 3
        )
    summary = {"bench": "deploy", "manifest": str(args.manifest), **res, "ratios": ratios,
               "params": params, "models": {k: str(v) for k, v in dirs.items()},
               "load_avg_1m": [round(load_before[0], 1), round(os.getloadavg()[0], 1)],
               "cpu_count": os.cpu_count()}  # fmt: skip
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
