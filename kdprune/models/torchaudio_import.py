"""Import weights from a `torchaudio.models.Conformer` state dict (same layer shapes).

torchaudio's layer stack has no front end and no positional bias, so the target encoder
must use `pos_bias=False`; the import covers the conformer blocks (our `forward_layers`).
"""

from __future__ import annotations

import re

import torch

from kdprune.models.conformer import ConformerEncoder


def import_torchaudio_conformer(encoder: ConformerEncoder, state: dict[str, torch.Tensor]) -> None:
    """Copy `torchaudio.models.Conformer(...).state_dict()` into `encoder`'s blocks (strict)."""
    if encoder.cfg.pos_bias:
        raise ValueError(
            "torchaudio Conformer has no positional bias: build the encoder with pos_bias=False"
        )
    ours: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = re.match(r"conformer_layers\.(\d+)\.(.+)$", key)
        if m is None:
            raise ValueError(f"unexpected key in torchaudio Conformer state dict: {key}")
        i, rest = int(m.group(1)), m.group(2)
        p = f"layers.{i}."
        if rest.startswith("self_attn.in_proj_"):
            kind = rest.rsplit("_", 1)[1]  # weight | bias
            q, k, v = value.chunk(3, dim=0)
            ours[p + f"attn.q.{kind}"], ours[p + f"attn.k.{kind}"], ours[p + f"attn.v.{kind}"] = (
                q,
                k,
                v,
            )
            continue
        mapping = {
            "self_attn.out_proj.weight": "attn.out.weight",
            "self_attn.out_proj.bias": "attn.out.bias",
            "self_attn_layer_norm.weight": "attn.norm.weight",
            "self_attn_layer_norm.bias": "attn.norm.bias",
            "final_layer_norm.weight": "final_norm.weight",
            "final_layer_norm.bias": "final_norm.bias",
            "conv_module.layer_norm.weight": "conv.norm.weight",
            "conv_module.layer_norm.bias": "conv.norm.bias",
            "conv_module.sequential.0.weight": "conv.pw1.weight",
            "conv_module.sequential.0.bias": "conv.pw1.bias",
            "conv_module.sequential.2.weight": "conv.depthwise.weight",
            "conv_module.sequential.2.bias": "conv.depthwise.bias",
            "conv_module.sequential.5.bias": "conv.pw2.bias",
            "conv_module.sequential.3.weight": "conv.bn.weight",
            "conv_module.sequential.3.bias": "conv.bn.bias",
            "conv_module.sequential.3.running_mean": "conv.bn.running_mean",
            "conv_module.sequential.3.running_var": "conv.bn.running_var",
            "conv_module.sequential.3.num_batches_tracked": "conv.bn.num_batches_tracked",
            "conv_module.sequential.5.weight": "conv.pw2.weight",
        }
        for f in ("ffn1", "ffn2"):
            mapping |= {
                f"{f}.sequential.0.weight": f"{f}.norm.weight",
                f"{f}.sequential.0.bias": f"{f}.norm.bias",
                f"{f}.sequential.1.weight": f"{f}.w1.weight",
                f"{f}.sequential.1.bias": f"{f}.w1.bias",
                f"{f}.sequential.4.weight": f"{f}.w2.weight",
                f"{f}.sequential.4.bias": f"{f}.w2.bias",
            }
        if rest not in mapping:
            raise ValueError(f"unsupported torchaudio Conformer parameter: {key}")
        if mapping[rest].endswith(("pw1.weight", "pw2.weight")):
            value = value.squeeze(-1)  # Conv1d(k=1) -> Linear
        ours[p + mapping[rest]] = value
    layer_state = {k: v for k, v in encoder.state_dict().items() if k.startswith("layers.")}
    missing = sorted(set(layer_state) - set(ours))
    extra = sorted(set(ours) - set(layer_state))
    if missing or extra:
        raise ValueError(
            f"torchaudio import shape/key mismatch: missing {missing[:5]}, unexpected {extra[:5]}"
        )
    encoder.load_state_dict({**encoder.state_dict(), **ours}, strict=True)
