"""`kdprune export`: a model directory to ONNX (the whole transducer, in the layout
streaming runtimes use: `kdprune.deploy.onnx_export`) or its encoder (normalisation +
conformer) to TorchScript; every export is checked against eager PyTorch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdprune.models.model_dir import load_model_dir
from kdprune.models.transducer import Transducer
from kdprune.utils import log, write_json


class ExportableEncoder(nn.Module):
    """Raw log-mel (B, T, F) + lengths (B,) -> encoder output (B, T', D) + lengths."""

    def __init__(self, model: Transducer) -> None:
        super().__init__()
        self.normaliser, self.encoder = model.normaliser, model.encoder

    def forward(
        self, feats: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.encoder(self.normaliser(feats), lengths)
        return out.out, out.lengths


def _examples(n_mels: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        (torch.randn(1, 300, n_mels, generator=g), torch.tensor([300])),
        (torch.randn(2, 517, n_mels, generator=g), torch.tensor([517, 402])),
    ]


def export_model(model_dir: Path, fmt: str, out_dir: Path, atol: float = 1e-4) -> dict[str, Any]:
    """Export and verify: outputs on inputs of other lengths than the tracing example must
    match eager PyTorch within `atol` (so shapes are dynamic, not baked in)."""
    if fmt not in ("torchscript", "onnx"):
        raise ValueError(f"format must be torchscript or onnx, got {fmt!r}")
    if fmt == "onnx":
        from kdprune.deploy.onnx_export import export_onnx

        return export_onnx(model_dir, out_dir, atol)
    m = load_model_dir(model_dir)
    enc = ExportableEncoder(m.model).eval()
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    examples = _examples(m.config.features.n_mels)
    with torch.no_grad():
        eager = [enc(*ex) for ex in examples]
    path = out_dir / "encoder.pt"
    with torch.no_grad():
        traced = torch.jit.trace(enc, examples[0], check_trace=False)
    traced.save(str(path))
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        got = [loaded(*ex) for ex in examples]
    got = [(o.numpy(), n.numpy()) for o, n in got]
    diffs = []
    for (eo, el), (go, gl) in zip(eager, got, strict=True):
        if go.shape != tuple(eo.shape) or (gl != el.numpy()).any():
            raise RuntimeError(
                f"exported {fmt} model changes output shapes/lengths: {go.shape} vs {tuple(eo.shape)}"
            )
        diffs.append(float(abs(go - eo.numpy()).max()))
    if max(diffs) > atol:
        raise RuntimeError(
            f"exported {fmt} encoder differs from eager PyTorch by {max(diffs):.2e} > {atol}"
        )
    log(f"exported {fmt} encoder to {path}; max abs diff vs eager {max(diffs):.2e}")
    result = {
        "export": str(path),
        "format": fmt,
        "max_abs_diff": max(diffs),
        "model_dir": str(Path(model_dir).resolve()),
    }
    write_json(out_dir / "export.json", result)
    return result
