"""Which device a stage runs on: the one place ``--device {auto,cpu,cuda}`` becomes a
`torch.device`.

Every training and evaluation entry point (`kdprune pretrain / finetune / compress /
evaluate`, the sweep's teacher job) resolves its device here once and passes the result
down to `fit`, decoding and latency measurement, so nothing below chooses a device of its
own. Imports torch only when resolving, so the CLI can offer the choices without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")  # the --device flag's values


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or None): the first CUDA device when one is available, else the CPU;
    ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a `torch.device`: that device, checked.

    Raises ValueError naming the fix when CUDA is asked for and this machine (or this
    torch build) has none, or the CUDA index does not exist.
    """
    import torch

    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(
            f"unknown device {device!r}: use one of {', '.join(DEVICE_CHOICES)}"
        ) from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "no CUDA support"
            raise ValueError(
                f"--device {device}: no CUDA device is available here (torch "
                f"{torch.__version__}, {build}); use --device cpu or --device auto"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    elif dev.type != "cpu":
        raise ValueError(f"unsupported device {device!r}: use one of {', '.join(DEVICE_CHOICES)}")
    return dev


def model_device(model: torch.nn.Module) -> torch.device:
    """Where a model's parameters are (the CPU for a model without parameters)."""
    import torch

    return next((p.device for p in model.parameters()), torch.device("cpu"))
