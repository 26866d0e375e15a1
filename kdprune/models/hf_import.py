"""Import a Hugging Face Wav2Vec2-Conformer checkpoint (a local `save_pretrained` folder)
into the project's prunable conformer: `kdprune import --from hf-wav2vec2-conformer`.

The checkpoint's modules map onto options of the same encoder (`ConformerConfig`): the
waveform front end (`frontend="waveform"`: feature encoder + feature projection),
`position="relative"` (pos_bias_u/v, linear_pos) or `"rotary"`, bias-free conv modules
(`conv_bias=False`) and the encoder's last LayerNorm (`final_norm=True`). The result is a
model directory (DESIGN §3) with the encoder and an empty RNN-T head (vocabulary of 0,
no tokenizer); `kdprune finetune --init DIR` adds the user's tokenizer and a fresh head.

Nothing is downloaded. Weights are read from safetensors (one file or shards), or from a
pickle `pytorch_model.bin` with `torch.load(weights_only=True)` only. Anything the
importer cannot reproduce exactly is refused with one error naming the field.
"""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from kdprune.data.features import FeatureConfig
from kdprune.models.conformer import ConformerConfig, LayerDims
from kdprune.models.model_dir import save_model_dir
from kdprune.models.transducer import ModelConfig, Transducer

SOURCE = "hf-wav2vec2-conformer"
MODEL_TYPE = "wav2vec2-conformer"
SAMPLE_RATE = 16000
FRAME = 160  # samples per input frame (10 ms): the data path's waveform frames
# Config fields whose value must be one of these (anything else changes the maths).
REQUIRED = {
    "feat_extract_norm": ("layer",),
    "feat_extract_activation": ("gelu",),
    "hidden_act": ("swish", "silu"),
    "position_embeddings_type": ("relative", "rotary"),
    "add_adapter": (False,),
    "layer_norm_eps": (1e-5,),
}
# Checkpoint parts that the encoder's forward does not use: CTC / pre-training heads,
# the SpecAugment mask vector, `pos_conv_embed` (built but never called by
# Wav2Vec2ConformerEncoder.forward) and the rotary frequencies (computed from the config).
IGNORED = ("lm_head.", "quantizer.", "project_hid.", "project_q.", "masked_spec_embed",
           "encoder.pos_conv_embed.", "encoder.embed_positions.")  # fmt: skip
PREFIX = "wav2vec2_conformer."  # ForCTC / ForPreTraining wrap the model under this name


class CheckpointError(ValueError):
    """A checkpoint this importer cannot reproduce (kept a ValueError: the CLI's one line)."""


def read_hf_config(ckpt: Path) -> dict[str, Any]:
    """config.json of a checkpoint folder, checked to be a supported Wav2Vec2-Conformer."""
    path = Path(ckpt) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{ckpt}: no config.json (expected a save_pretrained folder)")
    cfg = json.loads(path.read_text())
    kind = cfg.get("model_type")
    if kind != MODEL_TYPE:
        raise CheckpointError(
            f"{path}: model_type {kind!r} (architectures {cfg.get('architectures')}) is not "
            f"supported; --from {SOURCE} imports model_type {MODEL_TYPE!r} "
            "(Wav2Vec2ConformerModel / ForCTC / ForPreTraining)"
        )
    for name, ok in REQUIRED.items():
        if name in cfg and cfg[name] not in ok:
            raise CheckpointError(
                f"{path}: unsupported {name}={cfg[name]!r}; supported: {', '.join(map(repr, ok))}"
            )
    if cfg.get("hidden_size", 0) % cfg.get("num_attention_heads", 1):
        raise CheckpointError(f"{path}: hidden_size is not a multiple of num_attention_heads")
    if math.prod(cfg.get("conv_stride", (5, 2, 2, 2, 2, 2, 2))) % FRAME:
        raise CheckpointError(
            f"{path}: unsupported conv_stride {cfg['conv_stride']}: the strides must multiply "
            f"to a multiple of {FRAME} samples (10 ms frames)"
        )
    pre = Path(ckpt) / "preprocessor_config.json"
    if pre.is_file():
        p = json.loads(pre.read_text())
        if p.get("sampling_rate", SAMPLE_RATE) != SAMPLE_RATE:
            raise CheckpointError(
                f"{pre}: unsupported sampling_rate {p['sampling_rate']}; supported: 16000"
            )
        if p.get("do_normalize", True) is not True:
            raise CheckpointError(f"{pre}: unsupported do_normalize=false; supported: true")
    return cfg


def encoder_config(hf: dict[str, Any]) -> ConformerConfig:
    """The ConformerConfig that reproduces a Wav2Vec2-Conformer config."""
    d, heads = hf["hidden_size"], hf["num_attention_heads"]
    convs = tuple(zip(hf["conv_dim"], hf["conv_kernel"], hf["conv_stride"], strict=True))
    dims = LayerDims(
        num_heads=heads,
        head_dim=d // heads,
        ffn1_dim=hf["intermediate_size"],
        ffn2_dim=hf["intermediate_size"],
        conv_channels=d,
    )
    return ConformerConfig(
        input_dim=FRAME,
        d_model=d,
        frontend="waveform",
        subsampling=math.prod(s for _, _, s in convs) // FRAME,
        wave_convs=convs,
        wave_conv_bias=bool(hf.get("conv_bias", False)),
        freeze_frontend=True,
        layers=(dims,) * hf["num_hidden_layers"],
        kernel_size=hf.get("conv_depthwise_kernel_size", 31),
        dropout=float(hf.get("hidden_dropout", 0.1)),
        position=hf.get("position_embeddings_type", "relative"),
        pos_bias=False,
        rotary_dim=d // heads,
        rotary_base=int(hf.get("rotary_embedding_base", 10000)),
        conv_bias=False,
        final_norm=True,
    )


def read_weights(ckpt: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors: model.safetensors, its shards, or pytorch_model.bin
    (weights_only: tensors only, no code runs)."""
    ckpt = Path(ckpt)
    if (ckpt / "model.safetensors").is_file():
        return load_file(str(ckpt / "model.safetensors"))
    index = ckpt / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return {k: v for s in shards for k, v in load_file(str(ckpt / s)).items()}
    if (ckpt / "pytorch_model.bin").is_file():
        try:
            return torch.load(ckpt / "pytorch_model.bin", map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise CheckpointError(
                f"{ckpt}/pytorch_model.bin holds more than tensors; refusing to unpickle it "
                f"(convert it to safetensors): {str(e).splitlines()[0]}"
            ) from e
    raise CheckpointError(
        f"{ckpt}: no weight file; expected model.safetensors, model.safetensors.index.json "
        "or pytorch_model.bin"
    )


_LAYER = {
    "ffn1_layer_norm": "ffn1.norm",
    "ffn1.intermediate_dense": "ffn1.w1",
    "ffn1.output_dense": "ffn1.w2",
    "ffn2_layer_norm": "ffn2.norm",
    "ffn2.intermediate_dense": "ffn2.w1",
    "ffn2.output_dense": "ffn2.w2",
    "self_attn_layer_norm": "attn.norm",
    "self_attn.linear_q": "attn.q",
    "self_attn.linear_k": "attn.k",
    "self_attn.linear_v": "attn.v",
    "self_attn.linear_out": "attn.out",
    "self_attn.linear_pos": "attn.linear_pos",
    "self_attn.pos_bias_u": "attn.pos_bias_u",
    "self_attn.pos_bias_v": "attn.pos_bias_v",
    "conv_module.layer_norm": "conv.norm",
    "conv_module.pointwise_conv1": "conv.pw1",
    "conv_module.depthwise_conv": "conv.depthwise",
    "conv_module.batch_norm": "conv.bn",
    "conv_module.pointwise_conv2": "conv.pw2",
    "final_layer_norm": "final_norm",
}
_TOP = {
    "feature_projection.layer_norm": "subsampling.proj_norm",
    "feature_projection.projection": "subsampling.proj",
    "encoder.layer_norm": "out_norm",
}


def _our_key(key: str) -> str | None:
    """Checkpoint key -> our encoder's key; None for an ignored part."""
    key = key.removeprefix(PREFIX)
    if key.startswith(IGNORED):
        return None
    if key.startswith("feature_extractor.conv_layers."):
        i, rest = key.split(".", 3)[2:]
        return f"subsampling.convs.{i}.{rest.replace('layer_norm', 'norm')}"
    if key.startswith("encoder.layers."):
        i, rest = key.split(".", 3)[2:]
        mod, leaf = rest.rsplit(".", 1) if "." in rest else (rest, "")
        if mod in _LAYER:
            return f"layers.{i}.{_LAYER[mod]}.{leaf}"
        if rest in _LAYER:  # pos_bias_u/v are parameters, not modules
            return f"layers.{i}.{_LAYER[rest]}"
    mod, leaf = key.rsplit(".", 1)
    if mod in _TOP:
        return f"{_TOP[mod]}.{leaf}"
    raise CheckpointError(f"unsupported parameter in the checkpoint: {key}")


def import_hf_wav2vec2_conformer(ckpt: Path) -> Transducer:
    """A Transducer whose encoder reproduces the checkpoint's Wav2Vec2ConformerModel
    (eval mode); its RNN-T head is empty (vocabulary 0) until `finetune --init`."""
    hf = read_hf_config(ckpt)
    enc_cfg = encoder_config(hf)
    feats = FeatureConfig(sample_rate=SAMPLE_RATE, n_mels=FRAME, hop_length=FRAME, kind="waveform")
    model = Transducer(ModelConfig(vocab_size=0, features=feats, encoder=enc_cfg))
    ours = model.encoder.state_dict()
    loaded: dict[str, torch.Tensor] = {}
    for key, value in read_weights(ckpt).items():
        mine = _our_key(key)
        if mine is None:
            continue
        if mine.endswith(("pw1.weight", "pw2.weight")):
            value = value.squeeze(-1)  # Conv1d(k=1) -> Linear
        if mine not in ours or ours[mine].shape != value.shape:
            want = tuple(ours[mine].shape) if mine in ours else "no such tensor"
            raise CheckpointError(f"{key}: shape {tuple(value.shape)} does not fit {mine} ({want})")
        loaded[mine] = value
    missing = sorted(k for k in ours if k not in loaded and not k.endswith("num_batches_tracked"))
    if missing:
        raise CheckpointError(
            f"{ckpt}: the checkpoint lacks {len(missing)} tensors, e.g. {missing[:3]}"
        )
    model.encoder.load_state_dict({**ours, **loaded}, strict=True)
    return model.eval()


def import_checkpoint(ckpt: Path, out_dir: Path) -> dict[str, Any]:
    """`kdprune import --from hf-wav2vec2-conformer`: checkpoint folder -> model directory.
    Returns the command's result (model_dir, encoder params, layout)."""
    ckpt = Path(ckpt).resolve()
    if not ckpt.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {ckpt}")
    model = import_hf_wav2vec2_conformer(ckpt)
    cfg = model.cfg.encoder
    info = {
        "source": SOURCE,
        "checkpoint": str(ckpt),
        "encoder_params": model.encoder_params(),
        "position": cfg.position,
        "num_layers": cfg.num_layers,
        "d_model": cfg.d_model,
    }
    out = save_model_dir(Path(out_dir), model, None, {"stage": "import", **info})
    return {"model_dir": str(out), **info}
