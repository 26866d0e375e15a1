"""Small random Hugging Face Wav2Vec2-Conformer checkpoints for the import tests (no
download: built from a config, saved with `save_pretrained` as safetensors).

The model is 2 conformer blocks of width 32 (4 heads, FFN 48, depthwise kernel 5) on a
3-layer waveform feature encoder (8 channels, strides 5·4·16 = 320 samples = two 10 ms
frames), with every parameter and batch-norm statistic perturbed so that no norm or bias
is the identity it starts as."""

from __future__ import annotations

from pathlib import Path

import torch

HF_REASON = "needs transformers (the [hf] extra: pip install -e '.[hf]')"
SMALL = {
    "hidden_size": 32,
    "num_attention_heads": 4,
    "intermediate_size": 48,
    "num_hidden_layers": 2,
    "conv_dim": (8, 8, 8),
    "conv_kernel": (10, 4, 16),
    "conv_stride": (5, 4, 16),
    "conv_bias": True,
    "feat_extract_norm": "layer",
    "hidden_act": "swish",
    "conv_depthwise_kernel_size": 5,
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
}


def hf_model(position: str, seed: int = 0, **overrides):
    """A random Wav2Vec2ConformerModel in eval mode."""
    from transformers import Wav2Vec2ConformerConfig, Wav2Vec2ConformerModel

    torch.manual_seed(seed)
    cfg = Wav2Vec2ConformerConfig(**{**SMALL, "position_embeddings_type": position, **overrides})
    model = Wav2Vec2ConformerModel(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def save_checkpoint(out: Path, position: str, **overrides) -> tuple[Path, object]:
    """Save a random checkpoint to `out` (safetensors); -> (folder, the HF model)."""
    model = hf_model(position, **overrides)
    model.save_pretrained(out)
    return Path(out), model
