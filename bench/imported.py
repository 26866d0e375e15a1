"""P2 on an imported Wav2Vec2-Conformer: CPU latency and memory of the encoder pruned to
50 % of its parameters (materialised) against the unpruned import, batch 1, 10 s of audio.

Usage:
    .venv/bin/python bench/imported.py [--size large|base] [--position relative|rotary]
        [--threads 1] [--rounds 3]

Latency needs shapes, not trained weights: the encoder is built from the importer's own
mapping (`encoder_config`) of the Wav2Vec2-Conformer configuration of the chosen size
(large: facebook/wav2vec2-conformer-rel-pos-large's dims) with random weights; parity of
the mapping is tested in tests/test_hf_import.py. Pruning is P2's (bench/compression.py):
the same random fraction of heads, FFN units and conv channels in every module. Memory is
the parameter and buffer bytes of each model and the peak RSS growth of its forward.
"""

from __future__ import annotations

import argparse
import os
import resource

import torch
from compression import device_name, emit, interleaved, latency_fn, log, pruned_encoder

from kdprune.models.conformer import ConformerEncoder
from kdprune.models.hf_import import encoder_config

SIZES = {  # Wav2Vec2-Conformer dims (feature encoder: 7 convs of 512 channels, 320x stride)
    "large": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
              "intermediate_size": 4096},
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
             "intermediate_size": 3072},
}  # fmt: skip
FRONT = {"conv_dim": [512] * 7, "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
         "conv_stride": [5, 2, 2, 2, 2, 2, 2], "conv_bias": True}  # fmt: skip


def model_bytes(m: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*m.parameters(), *m.buffers()])


def forward_peak_mb(m: torch.nn.Module, feats: torch.Tensor) -> float:
    """Peak RSS growth (MB) of one forward, run in a forked child so that each model's
    peak is its own (the parent's earlier peaks do not hide it)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        with open("/proc/self/statm") as f:
            base = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        with torch.inference_mode():
            m(feats, torch.tensor([feats.shape[1]]))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        os.write(w, f"{peak - base:.1f}".encode())
        os._exit(0)
    os.close(w)
    out = os.read(r, 64).decode()
    os.waitpid(pid, 0)
    return float(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="large", choices=list(SIZES))
    ap.add_argument("--position", default="relative", choices=("relative", "rotary"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    hf = {**SIZES[args.size], **FRONT, "position_embeddings_type": args.position}
    teacher = ConformerEncoder(encoder_config(hf)).eval()
    log(f"{args.size} import: {teacher.num_params():,} encoder params; pruning to 50 %")
    pruned = pruned_encoder(teacher, 0.5)
    feats = torch.randn(1, 1000, 160)  # 10 s of waveform in 10 ms frames
    models = {"teacher": teacher, "pruned_0.5": pruned}
    rss = {k: forward_peak_mb(m, feats) for k, m in models.items()}
    fns = {k: latency_fn(m, feats, "cpu", 1, args.threads) for k, m in models.items()}
    fns["frontend"] = latency_fn(teacher.subsampling, feats, "cpu", 1, args.threads)
    with torch.inference_mode():
        ms = interleaved(fns, args.rounds)
    emit(
        "P2-import",
        round(ms.ratio("teacher", "pruned_0.5"), 3),
        ">= 1.8",
        "x speed-up",
        device_name("cpu", args.threads),
        {
            "size": args.size,
            "position": args.position,
            "audio_s": 10.0,
            "batch": 1,
            "rounds": args.rounds,
            "encoder_params": {k: m.num_params() for k, m in models.items()},
            "sparsity": round(1 - pruned.num_params() / teacher.num_params(), 4),
            "best_ms_per_audio_s": {k: round(ms.best(k), 2) for k in fns},
            "weights_mb": {k: round(model_bytes(m) / 2**20, 1) for k, m in models.items()},
            "forward_peak_rss_growth_mb": rss,
        },
    )


if __name__ == "__main__":
    main()
