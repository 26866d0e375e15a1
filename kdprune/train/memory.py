"""Peak memory of one training step, estimated from the configs and the batch shape, and
the `max_frames` that fits a device: `TrainConfig.max_frames = 0` means "as many padded
frames as the device's memory holds", resolved here where the device is known.

Why an estimate rather than a trial step: the batch plan needs the number before the first
batch, and a paper-size step cannot be tried where there is no such GPU. The count follows
the model code tensor by tensor — what autograd keeps for the backward pass in the front
end (the first Conv2d's output is the largest), every conformer module, the CTC and
predictor heads, KD — plus parameters, gradients, AdamW state, the RNN-T joint of the
largest sub-batch `rnnt_loss_bounded` forms under its budget, and the frozen teacher's
forward. The largest of three moments is the peak: the start of the backward pass (all
activations + the joint), the front end's backward, the teacher's forward, the optimiser
step. Checked against
measured peaks: tests/test_memory.py (CPU, a fresh process's RSS), bench/gpu_check.py (CUDA,
`max_memory_allocated`).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, replace

import torch

from kdprune.models.conformer import ConformerConfig
from kdprune.models.transducer import ModelConfig, Transducer
from kdprune.train.loop import TrainConfig
from kdprune.train.losses import JOINT_BUDGET_MB, joint_bytes
from kdprune.utils import log

ACT_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}  # bytes of an activation under each precision
# Share of the device's memory an estimate may fill: the rest is for the CUDA context,
# cuBLAS/NCCL workspaces, the caching allocator's rounding and fragmentation, and what the
# estimate leaves out (small tensors, kernels' scratch).
HEADROOM = 0.85
# Transcript tokens per input frame assumed for the RNN-T and CTC terms: 5 per second of
# audio at 10 ms frames (LibriSpeech with 1k BPE pieces has ~3). The joint is bounded by
# its sub-batch budget, so a longer transcript changes the estimate little.
LABELS_PER_FRAME = 0.05


@dataclass(frozen=True, kw_only=True)
class StepShape:
    """One training batch: `batch` utterances padded to `frames` input frames and `labels`
    tokens."""

    batch: int
    frames: int
    labels: int


@dataclass(frozen=True, kw_only=True)
class MemoryEstimate:
    """Bytes of one training step at its peak, by what holds them."""

    states: int  # weights, gradients, AdamW moments, autocast weight copies, the teacher
    activations: int  # kept for the backward pass (encoder, heads, KD, the batch itself)
    joint: int  # the RNN-T joint of the largest sub-batch (forward tensors + gradients)
    total: int  # the peak: states + the largest of (activations + joint, front-end
    # backward, teacher forward, optimiser step)

    def to_dict(self) -> dict[str, float]:
        return {k: round(v / 1e9, 3) for k, v in asdict(self).items()} | {"unit": "GB"}


def _param_count(cfg: ModelConfig) -> int:
    """Trainable parameters of the RNN-T (CTC head included), counted without memory."""
    with torch.device("meta"):
        return sum(p.numel() for p in Transducer(cfg).parameters())


def _front_end(enc: ConformerConfig, b: int, t: int, a: int, mb: int) -> tuple[int, int, int]:
    """(bytes kept for the backward pass, the largest conv output, the input cast) of the
    front end for (b, t) input frames."""
    if enc.frontend == "waveform":  # conv feature encoder; a frozen one keeps nothing
        if enc.freeze_frontend:
            return 0, 0, 0
        kept, largest, n = 0, 0, t * enc.input_dim
        for ch, k, s in enc.wave_convs:
            n = (n - k) // s + 1
            kept += 4 * b * ch * n * a  # conv out, LayerNorm in (fp32) and out, GELU out
            largest = max(largest, b * ch * n * a)
        return kept, largest, a * b * t * enc.input_dim
    tt, f = t, enc.input_dim
    x_in = a * b * t * f  # the conv's input, kept for its weight gradient
    kept, largest = x_in, 0
    for c in enc.frontend_channels:  # per conv (a pruned front end has fewer)
        tt, f = (tt - 1) // 2, (f - 1) // 2
        kept += a * b * c * tt * f  # ReLU output (the next conv's input)
        largest = max(largest, a * b * c * tt * f)
    kept += a * b * c * tt * f  # (B, T', C*F') copy for the projection
    kept += mb * b * tt * enc.d_model  # dropout after the projection
    return kept, largest, x_in


def _layers(enc: ConformerConfig, t: int, a: int, mb: int, fused_attn: bool, gated: bool) -> int:
    """Bytes the conformer blocks keep per encoder frame for `t` frames per utterance
    (attention grows with t); per-batch constants ignored."""
    d, total = enc.d_model, 0
    for dims in enc.layers:
        r = dict(dims.ranks)
        mods = [dims.ffn1_dim, dims.num_heads, dims.conv_channels, dims.ffn2_dim]
        n_mods = sum(1 for m in mods if m)
        # The residual stream (fp32: LayerNorm outputs and the sums with them) at the input
        # of each module's LayerNorm and of the final one, with their mean and rstd.
        total += (n_mods + 1) * (4 * d + 8)
        for name, f in (("ffn1", dims.ffn1_dim), ("ffn2", dims.ffn2_dim)):
            if f:  # LN out -> w1 (in) -> SiLU (in) -> dropout -> w2 (in) -> dropout
                total += a * d + 2 * a * f + mb * (f + d)
                total += a * sum(r.get(f"{name}.{w}", 0) for w in ("w1", "w2"))  # low rank
                total += a * (f + d) if gated else 0  # unit and module gates' products
        if dims.num_heads:
            h, w = dims.num_heads, dims.num_heads * dims.head_dim
            bias_heads = h if enc.position == "learned_bias" and enc.pos_bias else 1
            total += a * d + 3 * a * w + a * bias_heads * t  # LN out, q/k/v, the (B,H,T,T) mask
            total += 2 * a * w + mb * d  # attention output and its (B,T,H*dh) copy; dropout
            if not fused_attn:  # the math kernel keeps scaled q and k, probabilities, dropout
                total += 2 * a * w + 2 * a * h * t
            total += a * sum(r.get(f"attn.{n}", 0) for n in ("q", "k", "v", "out"))
            total += a * (w + d) if gated else 0
        if dims.conv_channels:
            c = dims.conv_channels
            # LN out, pointwise-1 out (GLU in), padded GLU out, depthwise out, SiLU out, and
            # the masked batch norm's centred, normalised and output tensors (fp32).
            total += a * d + 2 * a * c + a * c * (t + enc.kernel_size - 1) // t
            total += 2 * a * c + 12 * c + mb * d
            total += a * sum(r.get(f"conv.{n}", 0) for n in ("pw1", "pw2"))
            total += a * (c + d) if gated else 0
    return total + t  # the (B, T', T') attention mask, shared by the layers


def estimate_step(
    model: ModelConfig,
    shape: StepShape,
    *,
    precision: str = "fp32",
    device_type: str = "cuda",
    teacher: ModelConfig | None = None,
    gated: bool = False,
    joint_budget_mb: float = JOINT_BUDGET_MB,
    trainable_params: int | None = None,
) -> MemoryEstimate:
    """Peak bytes of one training step of `model` (fwd + bwd + AdamW) on `shape`.

    precision: "fp32", or "bf16"/"fp16" autocast (fp32 weights, half-precision matmul
    outputs); device_type: "cuda" uses fused attention kernels, the CPU the math one
    when attention dropout is on; teacher: the frozen KD teacher (its forward, no grad,
    every layer's output kept for the KD loss); gated: HardConcrete gates on every unit.
    """
    a, enc = ACT_BYTES[precision], model.encoder
    b, t, u = shape.batch, shape.frames, max(1, shape.labels)
    cpu_dropout = device_type == "cpu"  # CPU dropout keeps a float mask, CUDA a bool one
    mb = (a if cpu_dropout else 1) if enc.dropout > 0 else 0
    fused_attn = not (device_type == "cpu" and enc.dropout > 0)
    n_params = trainable_params if trainable_params is not None else _param_count(model)
    # fp32 weights + AdamW's two moments; under autocast the half-precision copies of the
    # weights stay alive for the backward pass. Gradients (set to None between steps)
    # grow while the backward pass frees activations: counted at its end.
    states = n_params * (12 + (a if a < 4 else 0))
    grads = 4 * n_params
    if teacher is not None:
        states += 4 * _param_count(teacher)

    front, largest, x_in = _front_end(enc, b, t, a, mb)
    t_enc = enc_frames(enc, t)
    n_enc = b * t_enc
    batch_in = 2 * 4 * b * t * model.features.n_mels  # the batch and its SpecAugment copy
    encoder = front + n_enc * _layers(enc, t_enc, a, mb, fused_attn, gated)
    d, v = enc.d_model, model.num_classes
    # Encoder output (fp32) and its casts for the CTC and joiner projections; CTC keeps
    # log-probabilities and alphas (fp32); the predictor's LSTM keeps ~12 values per unit.
    heads = n_enc * (4 * d + 2 * a * d + 4 * v + 4 * (2 * u + 1))
    heads += b * (u + 1) * 12 * a * model.pred_dim
    kd = 0
    if teacher is not None:  # teacher outputs of every layer (fp32) + 4 taps' L1/cosine terms
        kd = n_enc * (4 * teacher.encoder.d_model * teacher.encoder.num_layers + 4 * 20 * d)
    activations = batch_in + encoder + heads + kd

    # The largest sub-batch `rnnt_loss_bounded` forms under its budget (`joint_bytes`
    # sizes the groups); at its peak it holds the fp32 logits' gradient (kept by the loss)
    # and the gradient flowing back, the tanh output and its gradient, and under autocast
    # the half-precision logits beside their fp32 copy.
    with torch.device("meta"):
        joiner = Transducer(model)
    group = min(b, max(1, int(joint_budget_mb * 2**20 // joint_bytes(1, t_enc, u + 1, joiner))))
    cell = 8 * v + 2 * a * model.joint_dim + (a * v if a < 4 else 0)
    joint = group * t_enc * (u + 1) * cell

    # End of the backward pass: every gradient, the front end's input and first ReLU
    # output, and the two gradients of that ReLU while the rest has been freed.
    backward_front = grads + x_in + 3 * largest + batch_in
    teacher_fwd = 0
    if teacher is not None:
        _, tl, tx = _front_end(teacher.encoder, b, t, a, 0)
        teacher_fwd = batch_in + tx + 2 * tl + kd  # its conv output and ReLU, its hidden
    # The optimiser step: every gradient, and on CUDA AdamW's foreach denominator list.
    optimiser = grads + (4 * n_params if device_type == "cuda" else 0)
    peak = states + max(activations + joint, backward_front, teacher_fwd, optimiser)
    return MemoryEstimate(states=states, activations=activations, joint=joint, total=peak)


def enc_frames(enc: ConformerConfig, t: int) -> int:
    """Encoder frames of a `t`-frame input (as the front end's `output_lengths`)."""
    if enc.frontend == "waveform":
        n = t * enc.input_dim
        for _, k, s in enc.wave_convs:
            n = (n - k) // s + 1
        return max(1, n)
    for _ in range(int(math.log2(enc.subsampling))):
        t = (t - 1) // 2
    return max(1, t)


def max_frames_for(
    memory_bytes: int,
    model: ModelConfig,
    *,
    utt_frames: int,
    max_batch: int,
    headroom: float = HEADROOM,
    labels_per_frame: float = LABELS_PER_FRAME,
    step: int = 1000,
    **kw,
) -> int:
    """The largest `max_frames` (a multiple of `step`) whose worst batch fits
    `headroom * memory_bytes`; `kw` as `estimate_step`.

    Batches of the longest utterances (`utt_frames`) cost the most per frame (attention
    and joint grow with length); half and quarter lengths are checked too, since
    `max_batch` caps short-utterance batches differently. At least one longest utterance.
    """
    lengths = [x for x in (utt_frames, utt_frames // 2, utt_frames // 4) if x >= 16]
    n_params = kw.pop("trainable_params", None) or _param_count(model)

    def fits(m: int) -> bool:
        for t in lengths:
            b = min(max_batch, max(1, m // t))
            shape = StepShape(batch=b, frames=t, labels=math.ceil(t * labels_per_frame))
            est = estimate_step(model, shape, trainable_params=n_params, **kw)
            if est.total > headroom * memory_bytes:
                return False
        return True

    lo, hi = 0, max_batch * utt_frames // step + 1  # in units of `step`
    while lo < hi:  # the largest multiple that fits (estimates grow with m)
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid * step) else (lo, mid - 1)
    return max(lo * step, utt_frames)


def device_memory(device: torch.device | str) -> int:
    """Total memory of `device`: the GPU's, or the machine's RAM for the CPU."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_properties(dev).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def resolve_max_frames(
    cfg: TrainConfig,
    device: torch.device | str,
    model: ModelConfig,
    *,
    lengths: list[int],
    teacher: ModelConfig | None = None,
    gated: bool = False,
    precision: str = "auto",
) -> TrainConfig:
    """`cfg` with `max_frames = 0` (auto) replaced by what fits `device`; others as given.

    `lengths`: the training set's frame counts (its longest utterance sizes the worst
    batch); precision: the trainer's (`--precision`; "auto": bf16 on CUDA, fp32 on the CPU).
    Deterministic for a device type and data set, so a resumed run plans the same batches.
    """
    if cfg.max_frames > 0:
        return cfg
    dev = torch.device(device)
    if precision == "auto":
        precision = "bf16" if dev.type == "cuda" else "fp32"
    mem = device_memory(dev)
    frames = max_frames_for(
        mem,
        model,
        utt_frames=max(lengths),
        max_batch=cfg.max_batch,
        precision=precision,
        device_type=dev.type,
        teacher=teacher,
        gated=gated,
    )
    log(
        f"max_frames auto: {frames} padded frames per batch fit {mem / 1e9:.1f} GB of "
        f"{dev.type} ({precision}, longest utterance {max(lengths)} frames)"
    )
    return replace(cfg, max_frames=frames)
