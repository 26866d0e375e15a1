"""Resumable training checkpoints: atomic (temp file + rename), loaded with weights_only=True.

A checkpoint holds the model, the optimiser, the loop's state and the RNG states (the CPU
generator and, where CUDA is in use, every CUDA device's generator: HardConcrete samples,
dropout and dynamic chunks drawn on the GPU continue as in an unbroken run).

The previous checkpoint is replaced only after the new one is completely on disk, so a
crash (or a full disk) while writing leaves the last good checkpoint loadable.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

CKPT = "checkpoint.pt"


def save_checkpoint(
    ckpt_dir: Path, model: nn.Module, optimiser: torch.optim.Optimizer, state: dict[str, Any]
) -> Path:
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = ckpt_dir / CKPT
    tmp = ckpt_dir / f".{CKPT}.{os.getpid()}.tmp"
    payload = {
        "model": model.state_dict(),
        "optimiser": optimiser.state_dict(),
        "state": state,
        "rng": {
            "torch": torch.get_rng_state(),
            "python": list(random.getstate()[1]),
            "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        payload["rng"]["cuda"] = torch.cuda.get_rng_state_all()
    try:
        # A Python file object (not a path) keeps the OS error of a failed write reachable:
        # torch reports it as "unexpected pos 576 vs 534"; fsync before the rename so the
        # new file is on disk, not only in the page cache, when it replaces the old one.
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        cause = _os_error(exc)
        if cause is None:
            raise
        raise OSError(
            cause.errno,
            f"could not write checkpoint {path}: {cause.strerror}; the previous checkpoint is kept",
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _os_error(exc: BaseException | None) -> OSError | None:
    """The OSError (with an errno) behind ``exc``, following its cause/context chain."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError) and exc.errno is not None:
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def load_checkpoint(
    ckpt_dir: Path, model: nn.Module, optimiser: torch.optim.Optimizer | None
) -> dict[str, Any] | None:
    """Restore model/optimiser/RNG from `ckpt_dir`; returns the saved state or None."""
    path = Path(ckpt_dir) / CKPT
    if not path.exists():
        return None
    payload = torch.load(path, weights_only=True, map_location="cpu")
    model.load_state_dict(payload["model"], strict=True)
    if optimiser is not None:
        optimiser.load_state_dict(payload["optimiser"])
    torch.set_rng_state(payload["rng"]["torch"])
    cuda_states = payload["rng"].get("cuda")
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states[: torch.cuda.device_count()])
    return payload["state"]
