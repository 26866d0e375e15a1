"""`kdprune export --format onnx`: a model directory -> what a transducer runtime needs.

Writes `encoder.onnx` (full context), `decoder.onnx` (one predictor step, LSTM state as
inputs and outputs), `joiner.onnx`, `tokens.txt` ("piece id" lines, the blank last), and
for a streaming model `streaming_encoder.onnx` (one chunk, its caches as inputs and
outputs); `metadata.json` describes them (vocabulary, blank id, decoder state, features,
subsampling, chunk windows and cache shapes, parameter counts) and the same key facts go
into encoder.onnx's metadata_props. Batch and time axes are dynamic.

Every graph is verified at export time against eager PyTorch on inputs of other shapes
than the tracing example (so no shape is baked in); the streaming graph is run chunk by
chunk through `OnnxTransducer.stream_chunks` and compared with `StreamingEncoder`.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdprune.deploy.graphs import DecoderGraph, EncoderGraph, JoinerGraph, StreamingEncoderGraph
from kdprune.deploy.runtime import METADATA, TOKENS, OnnxTransducer, require
from kdprune.models.model_dir import load_model_dir
from kdprune.models.streaming import StreamingEncoder
from kdprune.models.transducer import Transducer
from kdprune.utils import log, to_dict, write_json

OPSET = 17  # onnxruntime >= 1.14 runs it; the TorchScript exporter's best-tested opset
FILES = {
    "encoder": "encoder.onnx",
    "decoder": "decoder.onnx",
    "joiner": "joiner.onnx",
    "tokens": TOKENS,
}
STREAMING_FILE = "streaming_encoder.onnx"


def _export(module: torch.nn.Module, args: tuple, path: Path, inputs, outputs, axes) -> None:
    # The TorchScript exporter warns about constant folding and LSTM batch sizes; `verify`
    # runs every graph at other batch sizes and lengths, which is what counts.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )


def _stream_meta(model: Transducer, graph: StreamingEncoderGraph) -> dict[str, Any]:
    cfg, sub = model.cfg.encoder, model.encoder.subsampling
    c, stride, rf = cfg.chunk_size, sub.stride, sub.receptive_field
    return {
        "file": STREAMING_FILE,
        "chunk_size": c,  # encoder frames per chunk
        "left_chunks": cfg.left_chunks,
        "subsampling": stride,
        "receptive_field": rf,
        "window_frames": stride * (c - 1) + rf,  # feature frames per whole-chunk call
        "shift_frames": stride * c,  # feature frames between consecutive windows
        "cache_frames": graph.cache_len,
        "states": [{"name": n, "shape": list(s)} for n, s in graph.state_specs()],
    }


def _metadata(model: Transducer, model_dir: Path, stream: dict | None) -> dict[str, Any]:
    cfg = model.cfg
    lstm = model.predictor.lstm
    return {
        "format": "kdprune-onnx-transducer",
        "opset": OPSET,
        "files": dict(FILES),
        "vocab_size": cfg.vocab_size,  # sentencepiece pieces; the blank is one more
        "blank_id": cfg.blank,
        "num_classes": cfg.num_classes,
        "joiner_dim": cfg.joint_dim,
        "decoder": {  # stateful predictor: context is its LSTM state, one token a step
            "type": "lstm",
            "context_size": 1,
            "num_layers": lstm.num_layers,
            "hidden": lstm.hidden_size,
        },
        "features": to_dict(cfg.features),  # raw log-mel in; the graphs normalise
        "subsampling": model.encoder.subsampling.stride,
        "streaming": stream,
        "params": model.num_params(),
        "encoder_params": model.encoder_params(),
        "model_dir": str(model_dir),
    }


def _write_tokens(path: Path, tokenizer, blank: int) -> None:
    pieces = [tokenizer.sp.id_to_piece(i) for i in range(tokenizer.vocab_size)]
    lines = [f"{p} {i}" for i, p in enumerate(pieces)] + [f"<blk> {blank}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _add_onnx_metadata(path: Path, meta: dict[str, Any]) -> None:
    """Flat key facts in the encoder's metadata_props (what sherpa-style runtimes read)."""
    onnx = require("onnx")
    m = onnx.load(str(path))
    facts = {
        "model_type": "conformer-transducer",
        "vocab_size": meta["num_classes"],
        "blank_id": meta["blank_id"],
        "context_size": meta["decoder"]["context_size"],
        "subsampling": meta["subsampling"],
    }
    if meta["streaming"]:
        s = meta["streaming"]
        facts.update(
            chunk_size=s["chunk_size"],
            left_chunks=s["left_chunks"],
            T=s["window_frames"],
            decode_chunk_len=s["shift_frames"],
        )
    for k, v in facts.items():
        prop = m.metadata_props.add()
        prop.key, prop.value = k, str(v)
    onnx.save(m, str(path))


def _max_diff(a: torch.Tensor | np.ndarray, b: np.ndarray, what: str) -> float:
    a = a.detach().numpy() if isinstance(a, torch.Tensor) else a
    if a.shape != b.shape:
        raise RuntimeError(f"exported {what} changes the output shape: {b.shape} vs {a.shape}")
    return float(np.abs(a - b).max()) if a.size else 0.0


@torch.no_grad()
def verify(model: Transducer, ort_model: OnnxTransducer) -> dict[str, float]:
    """Max abs difference of each exported graph from eager PyTorch, on shapes other than
    the tracing examples; an error when lengths or shapes differ."""
    g = torch.Generator().manual_seed(1)
    n_mels = model.cfg.features.n_mels
    diffs: dict[str, float] = {}
    enc = EncoderGraph(model).eval()
    for lens in ([300], [517, 402]):
        x = torch.randn(len(lens), max(lens), n_mels, generator=g)
        ref, ref_lens = enc(x, torch.tensor(lens))
        out, out_lens = ort_model.encode(x.numpy(), np.array(lens))
        if (out_lens != ref_lens.numpy()).any():
            raise RuntimeError(f"exported encoder changes lengths: {out_lens} vs {ref_lens}")
        diffs["encoder"] = max(diffs.get("encoder", 0.0), _max_diff(ref, out, "encoder"))
    dec, join = DecoderGraph(model).eval(), JoinerGraph(model).eval()
    d = ort_model.meta["decoder"]
    y = torch.randint(0, model.cfg.num_classes, (3, 1), generator=g)
    h, c = (torch.randn(d["num_layers"], 3, d["hidden"], generator=g) for _ in range(2))
    ref = dec(y, h, c)
    got = ort_model.decoder.run(None, {"y": y.numpy(), "h": h.numpy(), "c": c.numpy()})
    diffs["decoder"] = max(_max_diff(r, o, "decoder") for r, o in zip(ref, got, strict=True))
    e, p = (torch.randn(5, model.cfg.joint_dim, generator=g) for _ in range(2))
    (got,) = ort_model.joiner.run(None, {"encoder_out": e.numpy(), "decoder_out": p.numpy()})
    diffs["joiner"] = _max_diff(join(e, p), got, "joiner")
    if ort_model.stream is not None:
        x = torch.randn(1, 211, n_mels, generator=g)
        stream = StreamingEncoder(model.encoder)
        ref = model.joiner.enc_proj(stream.push(model.normaliser(x), final=True))
        chunks = list(ort_model.stream_chunks(x.numpy()))
        got = np.concatenate(chunks, axis=1) if chunks else np.zeros((1, 0, ref.shape[2]))
        diffs["streaming_encoder"] = _max_diff(ref, got.astype(np.float32), "streaming encoder")
    return diffs


def export_onnx(model_dir: Path, out_dir: Path, atol: float = 1e-4) -> dict[str, Any]:
    """Export and verify every graph; the result names the directory, files and the
    largest difference from eager PyTorch (an error above `atol`)."""
    require("onnx"), require("onnxruntime")  # before minutes of tracing, not after
    model_dir = Path(model_dir).resolve()
    m = load_model_dir(model_dir)
    model, cfg = m.model.eval(), m.config
    out_dir = Path(out_dir).resolve()
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / METADATA).exists():
        raise ValueError(f"{out_dir} exists and is not an ONNX export: choose an empty --out")
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        x = torch.randn(1, 300, cfg.features.n_mels)
        _export(EncoderGraph(model).eval(), (x, torch.tensor([300])), tmp / FILES["encoder"],
                ["x", "x_lens"], ["encoder_out", "encoder_out_lens"],
                {"x": {0: "batch", 1: "time"}, "x_lens": {0: "batch"},
                 "encoder_out": {0: "batch", 1: "frames"},
                 "encoder_out_lens": {0: "batch"}})  # fmt: skip
        lstm = model.predictor.lstm
        state = torch.zeros(lstm.num_layers, 1, lstm.hidden_size)
        y = torch.full((1, 1), cfg.blank, dtype=torch.long)
        _export(DecoderGraph(model).eval(), (y, state, state), tmp / FILES["decoder"],
                ["y", "h", "c"], ["decoder_out", "new_h", "new_c"],
                {"y": {0: "batch"}, "h": {1: "batch"}, "c": {1: "batch"},
                 "decoder_out": {0: "batch"}, "new_h": {1: "batch"},
                 "new_c": {1: "batch"}})  # fmt: skip
        e = torch.zeros(1, cfg.joint_dim)
        _export(JoinerGraph(model).eval(), (e, e), tmp / FILES["joiner"],
                ["encoder_out", "decoder_out"], ["logit"],
                {"encoder_out": {0: "n"}, "decoder_out": {0: "n"}, "logit": {0: "n"}})  # fmt: skip
        stream = None
        if cfg.encoder.streaming:
            graph = StreamingEncoderGraph(model).eval()
            stream = _stream_meta(model, graph)
            specs = graph.state_specs()
            names = [n for n, _ in specs]
            x = torch.randn(1, stream["window_frames"], cfg.features.n_mels)
            caches = [torch.randn(1, *s) for _, s in specs]
            axes = {"x": {0: "batch", 1: "time"}, "processed": {0: "batch"},
                    "encoder_out": {0: "batch", 1: "frames"},
                    "new_processed": {0: "batch"}}  # fmt: skip
            axes.update({n: {0: "batch"} for n in names})
            axes.update({f"new_{n}": {0: "batch"} for n in names})
            _export(graph, (x, torch.tensor([stream["shift_frames"]]), *caches),
                    tmp / STREAMING_FILE, ["x", "processed", *names],
                    ["encoder_out", "new_processed", *(f"new_{n}" for n in names)],
                    axes)  # fmt: skip
        meta = _metadata(model, model_dir, stream)
        _write_tokens(tmp / TOKENS, m.tokenizer, cfg.blank)
        write_json(tmp / METADATA, meta)
        _add_onnx_metadata(tmp / FILES["encoder"], meta)
        diffs = verify(model, OnnxTransducer(tmp))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    worst = max(diffs.values())
    if worst > atol:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(f"exported ONNX graphs differ from eager PyTorch: {diffs} > {atol}")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    files = {**FILES, "metadata": METADATA}
    if stream:
        files["streaming_encoder"] = STREAMING_FILE
    log(f"exported ONNX transducer to {out_dir}; max abs diff vs eager {worst:.2e} ({diffs})")
    return {
        "export": str(out_dir),
        "format": "onnx",
        "files": {k: str(out_dir / v) for k, v in files.items()},
        "streaming": stream is not None,
        "opset": OPSET,
        "max_abs_diff": worst,
        "max_abs_diff_per_graph": diffs,
        "model_dir": str(model_dir),
    }
