"""Training precision: the one place ``--precision {auto,fp32,bf16,fp16}`` becomes an
autocast dtype (and, for fp16, a gradient scaler).

`fit` runs each step's `compute_loss` under `Amp.autocast()`: matmuls and convolutions of
the model's forward run in bf16/fp16, while the loss terms that need the range or the
resolution of fp32 leave autocast themselves (`full_precision`): the RNN-T and CTC losses
(fp32 logits), the HardConcrete gates and the Lagrangian (`kdprune.pruning`), the KD
distances and the masked batch-norm statistics. Weights, gradients and optimiser state
stay fp32 (autocast casts per op). fp16's narrow range needs a `GradScaler`; bf16 does
not. On CUDA, fp32 matmuls and convolutions may use TF32 (`enable_tf32`). Imports torch
only when used, so the CLI can offer the choices without it.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")  # the --precision flag's values


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """``"auto"``: bf16 on CUDA (fp16 on a GPU without bf16), fp32 on the CPU; otherwise
    the name given, checked. Raises ValueError for an unknown name or bf16 on a GPU that
    has none."""
    import torch

    dev = torch.device(device)
    if precision == "auto":
        if dev.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    if precision not in PRECISION_CHOICES:
        raise ValueError(
            f"unknown precision {precision!r}: use one of {', '.join(PRECISION_CHOICES)}"
        )
    if precision == "bf16" and dev.type == "cuda":
        if not torch.cuda.is_bf16_supported(including_emulation=False):
            raise ValueError("--precision bf16: this GPU has no bf16; use fp16 or auto")
    return precision


def enable_tf32() -> None:
    """Let fp32 matmuls and cuDNN convolutions use TF32 tensor cores (CUDA only; what
    runs in fp32 under autocast, and everything at --precision fp32)."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("high")


def full_precision(device_type: str) -> AbstractContextManager:
    """Leave autocast for a region that must compute in fp32 (cast its inputs with
    ``.float()``); a no-op outside autocast."""
    import torch

    return torch.autocast(device_type, enabled=False)


@dataclass
class Amp:
    """The mixed-precision setting of one `fit`: an autocast dtype (None: fp32) and, for
    fp16, the gradient scaler (its state goes into checkpoints)."""

    name: str  # "fp32" | "bf16" | "fp16", resolved
    device_type: str  # "cpu" | "cuda"
    scaler: Any = None  # a torch.amp.GradScaler at fp16

    @classmethod
    def for_device(cls, precision: str, device: str | torch.device) -> Amp:
        import torch

        dev = torch.device(device)
        name = resolve_precision(precision, dev)
        if dev.type == "cuda":
            enable_tf32()
        scaler = torch.amp.GradScaler(dev.type) if name == "fp16" else None
        return cls(name, dev.type, scaler)

    @property
    def dtype(self) -> torch.dtype | None:
        import torch

        return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.name]

    def autocast(self) -> AbstractContextManager:
        """The context of the model's forward and loss (disabled at fp32)."""
        import torch

        dtype = self.dtype
        return torch.autocast(self.device_type, dtype=dtype, enabled=dtype is not None)
