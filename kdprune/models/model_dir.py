"""Model directories: config.json + model.safetensors + tokenizer.model, self-contained.

An imported SSL encoder (`kdprune import`) is a model directory without a tokenizer
(`"tokenizer": null`, vocabulary 0): only `finetune --init` opens it (`encoder_only=True`).

Loading uses safetensors (no pickle) and `strict=True`; a directory written by another
format version, or with missing files, is refused with a message naming what is wrong.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from kdprune import MODEL_FORMAT_VERSION, __version__
from kdprune.data.tokenizer import Tokenizer
from kdprune.models.transducer import ModelConfig, Transducer
from kdprune.utils import from_dict, read_json, to_dict, write_json

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
TOKENIZER = "tokenizer.model"


class ModelDirError(ValueError):
    """A model directory that cannot be loaded (missing files, wrong version, bad config)."""


@dataclass
class LoadedModel:
    model: Transducer
    tokenizer: Tokenizer | None  # None: an imported encoder awaiting `finetune --init`
    config: ModelConfig
    extra: dict[str, Any]  # everything else config.json records (provenance, metrics)


def save_model_dir(
    out_dir: Path,
    model: Transducer,
    tokenizer: Tokenizer | None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a model directory; files are written to a temp dir and moved in place."""
    out_dir = Path(out_dir).resolve()
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS))
        if tokenizer is not None:
            shutil.copyfile(tokenizer.model_file, tmp / TOKENIZER)
        write_json(
            tmp / CONFIG,
            {
                "format_version": MODEL_FORMAT_VERSION,
                "kdprune_version": __version__,
                "model": to_dict(model.cfg),
                "tokenizer": TOKENIZER if tokenizer is not None else None,
                "extra": extra or {},
            },
        )
    except BaseException:  # a failed write (full disk): no half-written temp dir left
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir


def load_model_dir(
    model_dir: Path, device: str | torch.device = "cpu", encoder_only: bool = False
) -> LoadedModel:
    """Load a model directory; `encoder_only` also accepts an imported encoder without a
    tokenizer (its `tokenizer` is then None)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelDirError(f"model directory not found: {model_dir}")
    for name in (CONFIG, WEIGHTS):
        if not (model_dir / name).exists():
            raise ModelDirError(f"{model_dir}: missing {name} (not a kdprune model directory?)")
    meta = read_json(model_dir / CONFIG)
    if meta.get("tokenizer", TOKENIZER) is None and not encoder_only:
        raise ModelDirError(
            f"{model_dir} is an imported encoder without tokenizer or RNN-T head: "
            f"add them with `kdprune finetune --init {model_dir}` first"
        )
    if meta.get("tokenizer", TOKENIZER) is not None and not (model_dir / TOKENIZER).exists():
        raise ModelDirError(f"{model_dir}: missing {TOKENIZER} (not a kdprune model directory?)")
    version = meta.get("format_version")
    if version != MODEL_FORMAT_VERSION:
        raise ModelDirError(
            f"{model_dir}: model format version {version!r}, this kdprune reads "
            f"{MODEL_FORMAT_VERSION}; re-export it with a matching kdprune version"
        )
    try:
        cfg = from_dict(ModelConfig, meta["model"])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelDirError(f"{model_dir}/{CONFIG}: invalid model config: {e}") from e
    tokenizer = Tokenizer(model_dir / TOKENIZER) if meta.get("tokenizer") is not None else None
    if tokenizer is not None and tokenizer.vocab_size != cfg.vocab_size:
        raise ModelDirError(
            f"{model_dir}: tokenizer has {tokenizer.vocab_size} pieces but the model expects "
            f"{cfg.vocab_size}: the tokenizer does not match the model"
        )
    model = Transducer(cfg)
    state = load_file(str(model_dir / WEIGHTS))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelDirError(f"{model_dir}/{WEIGHTS} does not match config.json: {e}") from e
    model.to(device).eval()
    return LoadedModel(model, tokenizer, cfg, meta.get("extra", {}))
