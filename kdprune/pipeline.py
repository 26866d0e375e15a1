"""Pipeline stages (DESIGN §2): corpus -> tokenizer -> SSL pre-training -> RNN-T fine-tuning.

Each stage writes into `<workdir>/<stage>/<preset>-<config hash>/`, returns at once when
that output already exists, and runs the stages it depends on when theirs are missing.
"""

from __future__ import annotations

import platform
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from kdprune.data.features import (
    FeatureSet,
    SpecAugmentConfig,
    global_stats,
    load_features,
    spec_augment,
)
from kdprune.data.manifest import read_manifest
from kdprune.data.synth import SPLITS, synth_config, synth_corpus
from kdprune.data.tokenizer import Tokenizer, train_tokenizer
from kdprune.device import resolve_device
from kdprune.eval.evaluate import model_latency, wer_on
from kdprune.eval.streaming_eval import stream_transcribe
from kdprune.eval.wer import corpus_wer
from kdprune.model_card import write_model_card
from kdprune.models.conformer import ConformerEncoder
from kdprune.models.model_dir import load_model_dir, save_model_dir
from kdprune.models.ssl import BestRq
from kdprune.models.transducer import Transducer
from kdprune.presets import Preset, get_preset
from kdprune.train.loop import fit
from kdprune.train.losses import asr_loss
from kdprune.train.memory import resolve_max_frames
from kdprune.utils import config_hash, log, read_json, write_json

SHIPPED_DEMO_TEACHER = Path(__file__).parent / "assets" / "demo_teacher"


def stage_dir(workdir: Path, stage: str, preset: str, *parts: Any) -> Path:
    return Path(workdir).resolve() / stage / f"{preset}-{config_hash(*parts)}"


def synth_data(preset: str, workdir: Path) -> dict[str, Path]:
    """`kdprune data synth`: the embedded generated corpus for a preset."""
    return synth_corpus(synth_config(preset), _corpus_dir(preset, workdir))


def _corpus_dir(preset: str, workdir: Path) -> Path:
    return stage_dir(workdir, "data", preset, synth_config(preset))


def resolve_manifests(
    preset: str, workdir: Path, manifests: dict[str, Path] | None
) -> dict[str, Path]:
    """User-given manifests (e.g. LibriSpeech) or the generated corpus of the preset."""
    if manifests:
        missing = [s for s in SPLITS if s not in manifests]
        if missing:
            raise ValueError(f"manifests for split(s) {missing} not given")
        return {s: Path(manifests[s]).resolve() for s in SPLITS}
    return synth_data(preset, workdir)


def _manifest_key(manifests: dict[str, Path]) -> list[str]:
    return [config_hash(Path(manifests[s]).read_bytes().decode()) for s in SPLITS]


def build_tokenizer(preset: Preset, manifests: dict[str, Path], workdir: Path) -> Tokenizer:
    """`kdprune tokenizer`: sentencepiece on the train transcripts."""
    out = (
        stage_dir(workdir, "tokenizer", preset.name, preset.vocab_size, _manifest_key(manifests)[0])
        / "tokenizer.model"
    )
    if out.exists():
        return Tokenizer(out)
    texts = [u.text for u in read_manifest(manifests["train"], check_audio=False)]
    log(f"training a {preset.vocab_size}-piece sentencepiece model on {len(texts)} transcripts")
    return train_tokenizer(texts, out, preset.vocab_size)


def features(manifests: dict[str, Path], preset: Preset, workdir: Path, split: str) -> FeatureSet:
    return load_features(manifests[split], preset.features, Path(workdir).resolve() / "features")


def _train_stats(fs: FeatureSet) -> tuple[torch.Tensor, torch.Tensor]:
    return global_stats(fs)


def pretrain(
    preset_name: str,
    workdir: Path,
    manifests: dict[str, Path] | None = None,
    device: str | torch.device = "auto",
    precision: str = "auto",
) -> Path:
    """`kdprune pretrain`: BEST-RQ on the train audio (no transcripts) -> encoder weights,
    trained on `device` (`kdprune.device.resolve_device`) at `precision`
    (`kdprune.train.precision`), saved from CPU tensors."""
    device = resolve_device(device)
    preset = get_preset(preset_name)
    manifests = resolve_manifests(preset_name, workdir, manifests)
    out = stage_dir(
        workdir,
        "pretrain",
        preset_name,
        preset.encoder,
        preset.bestrq,
        preset.pretrain,
        _manifest_key(manifests)[0],
    )
    weights = out / "encoder.safetensors"
    if weights.exists():
        return out
    train = features(manifests, preset, workdir, "train")
    mean, std = _train_stats(train)
    torch.manual_seed(preset.pretrain.seed)
    model = BestRq(ConformerEncoder(preset.encoder), preset.bestrq).to(device)
    gen = torch.Generator().manual_seed(preset.pretrain.seed)  # CPU: masks are drawn there
    mean_d, std_d = mean.to(device), std.to(device)
    opt = torch.optim.AdamW(
        model.parameters(), lr=preset.pretrain.lr, weight_decay=preset.pretrain.weight_decay
    )
    log(
        f"BEST-RQ pre-training: {model.encoder.num_params():,} encoder params, {len(train.utts)} utterances"
    )

    def compute_loss(batch, step):
        x = (batch.feats - mean_d) / std_d
        loss, acc = model(x, batch.feat_lens, gen)
        return loss, {"loss_ssl": float(loss.detach()), "acc_masked": acc}

    res = fit(
        model,
        compute_loss,
        opt,
        train,
        None,
        # BEST-RQ's codebook head is sized as the RNN-T heads (an over-estimate).
        resolve_max_frames(
            preset.pretrain,
            device,
            preset.model_config(),
            lengths=train.num_frames,
            precision=precision,
        ),
        ckpt_dir=out / "ckpt",
        device=device,
        precision=precision,
    )
    state = model.encoder.state_dict()
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(weights))
    save_file({"mean": mean, "std": std}, str(out / "stats.safetensors"))
    write_json(
        out / "pretrain.json", {"steps": res.steps, "wall_s": res.wall_s, "encoder": preset.encoder}
    )
    return out


def finetune(
    preset_name: str,
    workdir: Path,
    manifests: dict[str, Path] | None = None,
    init: str = "ssl",
    retrain: bool = False,
    out_dir: Path | None = None,
    max_steps: int | None = None,
    max_minutes: float | None = None,
    seed: int = 0,
    lr: float | None = None,
    device: str | torch.device = "auto",
    precision: str = "auto",
) -> dict[str, Any]:
    """`kdprune finetune`: dense RNN-T on the (SSL) encoder -> model directory + metrics.

    `init`: "ssl" (the BEST-RQ encoder), "random", or a model directory to continue from
    (its weights, tokenizer and feature statistics; the preset's encoder flags, e.g.
    dynamic chunks, apply). The demo preset returns the shipped teacher unless `retrain`
    (or other data) is asked. Pre-training, training, evaluation and latency run on
    `device` (`kdprune.device.resolve_device`); the model directory holds CPU tensors.
    `precision` (`kdprune.train.precision`): pre-training and training's autocast dtype.
    """
    device = resolve_device(device)
    init_dir = None
    if init not in ("ssl", "random"):
        init_dir = Path(init).resolve()
        if not (init_dir / "config.json").is_file():
            raise ValueError(f"init must be 'ssl', 'random' or a model directory, got {init!r}")
        init = str(init_dir)
    preset = get_preset(preset_name)
    cfg = preset.finetune
    cfg = replace(
        cfg,
        seed=seed,
        **({"max_steps": max_steps} if max_steps else {}),
        **({"max_minutes": max_minutes} if max_minutes else {}),
        **({"lr": lr} if lr else {}),
    )
    if (
        preset_name == "demo"
        and not retrain
        and not manifests
        and out_dir is None
        and init == "ssl"
        and cfg == replace(preset.finetune, seed=seed)
        and seed == 0
    ):
        if (SHIPPED_DEMO_TEACHER / "config.json").exists():
            extra = read_json(SHIPPED_DEMO_TEACHER / "config.json")["extra"]
            log(f"using the shipped demo teacher {SHIPPED_DEMO_TEACHER} (--retrain to rebuild it)")
            return {
                "model_dir": str(SHIPPED_DEMO_TEACHER),
                "shipped": True,
                **extra.get("metrics", {}),
            }
        log("no shipped demo teacher found: training it")
    manifests = resolve_manifests(preset_name, workdir, manifests)
    start = load_model_dir(init_dir, encoder_only=True) if init_dir else None
    imported = start is not None and start.tokenizer is None  # `kdprune import`: no head yet
    if imported:  # its encoder and front end, the preset's head; SpecAugment is for log-mel
        preset = replace(preset, features=start.config.features, encoder=start.config.encoder)
        cfg = replace(cfg, spec_augment=cfg.spec_augment and preset.features.kind == "log_mel")
    tok = start.tokenizer if start and not imported else build_tokenizer(preset, manifests, workdir)
    key = _finetune_dir(workdir, preset, cfg, init, manifests)
    out = Path(out_dir).resolve() if out_dir else key / "model"
    if (out / "config.json").exists() and not retrain:
        return _finished(out)
    train = features(manifests, preset, workdir, "train")
    dev = features(manifests, preset, workdir, "dev")
    torch.manual_seed(seed)
    model = Transducer(preset.model_config(tok.vocab_size))
    mean, std = _train_stats(train)
    model.normaliser.mean.copy_(mean)
    model.normaliser.std.copy_(std)
    if imported:
        model.encoder.load_state_dict(start.model.encoder.state_dict(), strict=True)
        log(f"encoder imported from {init_dir}; a fresh RNN-T head")
    elif start is not None:  # same shapes; the encoder's flags (causal, chunks) may differ
        model.load_state_dict(start.model.state_dict(), strict=True)
        log(f"continuing from {init_dir}")
    elif init == "ssl":
        pt = pretrain(preset_name, workdir, manifests, device, precision)
        model.encoder.load_state_dict(load_file(str(pt / "encoder.safetensors")), strict=True)
        log(f"encoder initialised from SSL pre-training {pt}")
    model.to(device)
    log(
        f"fine-tuning RNN-T on {device}: {model.num_params():,} params "
        f"({model.encoder_params():,} encoder)"
    )
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    sa = SpecAugmentConfig()
    dev_eval = dev.head(200)

    def compute_loss(batch, step):
        feats = (
            spec_augment(batch.feats, sa, gen, model.normaliser.mean)
            if cfg.spec_augment
            else batch.feats
        )
        r = asr_loss(model, batch, feats, cfg.ctc_weight)
        return r.loss, {"loss_rnnt": float(r.rnnt.detach()), "loss_ctc": float(r.ctc.detach())}

    def eval_dev(step):
        w = wer_on(model, dev_eval, tok, device)
        log(f"step {step}: dev WER {100 * w:.2f}% ({len(dev_eval.utts)} utts)")
        return {"wer_dev": w}

    res = fit(
        model,
        compute_loss,
        opt,
        train,
        tok,
        resolve_max_frames(cfg, device, model.cfg, lengths=train.num_frames, precision=precision),
        ckpt_dir=key / "ckpt",
        evaluate=eval_dev,
        device=device,
        precision=precision,
    )
    model.eval()
    test = features(manifests, preset, workdir, "test")
    metrics = {
        "wer_dev": wer_on(model, dev, tok, device),
        "wer_test": wer_on(model, test, tok, device),
        **_extra_test_wers(model, tok, manifests, preset, workdir, test, device),
        "params": model.num_params(),
        "encoder_params": model.encoder_params(),
        **model_latency(model, test, tok, device),
        "steps": res.steps,
        "train_wall_s": res.wall_s,
    }
    log(
        f"fine-tuned: dev WER {100 * metrics['wer_dev']:.2f}%, test WER {100 * metrics['wer_test']:.2f}%"
    )
    extra = {
        "stage": "finetune",
        "preset": preset_name,
        "init": init,
        "seed": seed,
        "train": cfg,
        "metrics": metrics,
        "history": res.history,
        "manifests": {k: str(v) for k, v in manifests.items()},
        "machine": f"{platform.machine()} {platform.processor() or ''} {torch.get_num_threads()} threads".strip(),
        "device": str(device),
        "command": " ".join(sys.argv),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    save_model_dir(out, model, tok, extra)  # from CPU copies of the weights
    write_json(out / "metrics.json", metrics)
    write_model_card(out, _corpus_summary(manifests))
    return {"model_dir": str(out), **metrics}


def _finetune_dir(
    workdir: Path, preset: Preset, cfg: Any, init: str, manifests: dict[str, Path]
) -> Path:
    """The fine-tuning stage folder, named by everything that changes its model."""
    parts = (preset.encoder, cfg, init, _manifest_key(manifests), preset.pred_dim, preset.joint_dim)
    return stage_dir(workdir, "finetune", preset.name, *parts)


def _finished(model_dir: Path) -> dict[str, Any]:
    extra = read_json(model_dir / "config.json")["extra"]
    return {"model_dir": str(model_dir), **extra.get("metrics", {})}


def finished_teacher(
    preset_name: str, workdir: Path, manifests: dict[str, Path] | None = None
) -> dict[str, Any] | None:
    """What `finetune(preset_name, workdir, manifests)` (default settings) returns when it
    has nothing to train: the shipped demo teacher, or the model directory built earlier
    under `workdir`; None when it would train. Builds nothing: a generated corpus is looked
    up, not synthesised (the sweep driver asks this before sending training to a worker)."""
    preset = get_preset(preset_name)
    if preset_name == "demo" and not manifests and (SHIPPED_DEMO_TEACHER / "config.json").exists():
        return finetune(preset_name, workdir)  # the shipped teacher: returns at once
    if manifests:
        manifests = resolve_manifests(preset_name, workdir, manifests)
    else:
        corpus = _corpus_dir(preset_name, workdir)
        manifests = {s: corpus / f"{s}.jsonl" for s in SPLITS}
    if not all(Path(m).is_file() for m in manifests.values()):
        return None
    cfg = replace(preset.finetune, seed=0)  # finetune's defaults
    out = _finetune_dir(workdir, preset, cfg, "ssl", manifests) / "model"
    return _finished(out) if (out / "config.json").is_file() else None


def _extra_test_wers(
    model: Transducer,
    tok: Tokenizer,
    manifests: dict[str, Path],
    preset: Preset,
    workdir: Path,
    test: FeatureSet,
    device: torch.device,
) -> dict[str, float]:
    """Test WER decoded chunk by chunk (streaming encoders), and on the corpus's padded
    test set (silence at both ends) when it has one."""
    out = {}
    if model.cfg.encoder.streaming:
        hyps, _ = stream_transcribe(model, test, tok, device)
        out["wer_test_streaming"] = corpus_wer([u.text for u in test.utts], hyps)[0]
    padded = Path(manifests["test"]).parent / "test_padded.jsonl"
    if padded.is_file():
        fs = load_features(padded, preset.features, Path(workdir).resolve() / "features")
        out["wer_test_padded"] = wer_on(model, fs, tok, device)
    return out


def _corpus_summary(manifests: dict[str, Path]) -> dict[str, Any] | None:
    """Counts from the generated corpus's corpus.json (None for user manifests)."""
    info = Path(manifests["train"]).parent / "corpus.json"
    if not info.exists():
        return None
    c = read_json(info)
    out: dict[str, Any] = {
        "vocabulary": c.get("vocabulary_size"),
        "config_hash": c.get("config_hash"),
    }
    for split, d in c.get("splits", {}).items():
        out[split] = (
            f"{d.get('utterances')} utts / {d.get('hours')} h / {d.get('num_voices')} voices {d.get('engines')}"
        )
    return out
