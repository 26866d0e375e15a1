"""Named presets: every recipe of a preset in one place (model, training, compression, corpus).

tiny  — tests: a tiny corpus and model trained from scratch in seconds.
demo  — the README main job on 2 CPU cores; its teacher ships with the project.
paper — LibriSpeech-scale on a GPU cluster (point `--manifests` at real data).

Every config here is built with keyword arguments, so a preset reads as a table of named
values. Changing a value changes the hashes that name cached outputs (corpus, features,
teacher), so old caches are never reused by mistake.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from kdprune.contract import PRESETS
from kdprune.data.features import FeatureConfig
from kdprune.data.synth_config import SynthConfig
from kdprune.models.conformer import ConformerConfig
from kdprune.models.hf_import import FRAME, encoder_config
from kdprune.models.ssl import BestRqConfig
from kdprune.models.transducer import ModelConfig
from kdprune.train.loop import TrainConfig

__all__ = ["PRESETS", "CompressRecipe", "Preset", "check_preset", "get_preset"]


@dataclass(frozen=True, kw_only=True)
class CompressRecipe:
    """Steps and learning rates of a compression run (`kdprune.compress`)."""

    prune_steps: int  # stage 1 (joint: prune + RNN-T + KD; sequential: prune + KD)
    finetune_steps: int  # stage 2: mask-free fine-tune after materialisation
    target_warmup_steps: int  # the sparsity target rises linearly over these steps
    # LR of the weights, batch size, eval cadence (max_steps unused): the preset's
    # fine-tuning config with the changes each preset lists.
    train: TrainConfig
    lr_gates: float = 0.02  # HardConcrete log-alpha (constant LR)
    lr_lambda: float = 0.02  # Lagrange multipliers (constant LR, gradient ascent)


@dataclass(frozen=True, kw_only=True)
class Preset:
    name: str
    vocab_size: int  # sentencepiece pieces
    features: FeatureConfig
    encoder: ConformerConfig
    pred_dim: int
    joint_dim: int
    bestrq: BestRqConfig
    pretrain: TrainConfig
    finetune: TrainConfig
    compress: CompressRecipe
    corpus: SynthConfig  # the generated corpus (`kdprune data synth`)

    def model_config(self, vocab_size: int | None = None) -> ModelConfig:
        """The dense RNN-T of this preset (the teacher's shape); ``vocab_size``: the
        tokenizer's, when it differs from the preset's."""
        return ModelConfig(
            vocab_size=vocab_size or self.vocab_size,
            features=self.features,
            encoder=self.encoder,
            pred_dim=self.pred_dim,
            joint_dim=self.joint_dim,
        )


def check_preset(name: str) -> str:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return name


def get_preset(name: str) -> Preset:
    presets = {"tiny": _tiny, "demo": _demo, "paper": _paper, "paper-ssl-large": _paper_ssl_large}
    return presets[check_preset(name)]()


def _tiny() -> Preset:
    base = TrainConfig(
        max_steps=60,
        lr=3e-3,
        warmup_steps=10,
        max_frames=6000,
        max_batch=16,
        eval_every=0,
        log_every=10,
        checkpoint_every=30,
        spec_augment=False,
    )
    return Preset(
        name="tiny",
        vocab_size=48,
        features=FeatureConfig(),
        encoder=ConformerConfig.uniform(
            num_layers=2,
            d_model=32,
            num_heads=2,
            ffn_dim=64,
            subsampling=4,
            subsampling_channels=8,
            kernel_size=7,
            dropout=0.0,
            max_rel_pos=16,
        ),
        pred_dim=48,
        joint_dim=48,
        bestrq=BestRqConfig(codebook_size=64, mask_span=3, mask_prob=0.05),
        pretrain=replace(base, max_steps=20),
        finetune=base,
        # Few hundred steps or less: HardConcrete log-alpha and lambda need LR 0.1 to reach
        # the target in time (measured: at 0.02 a 300-step run overshoots by 10-20 points).
        compress=CompressRecipe(
            prune_steps=40,
            finetune_steps=10,
            target_warmup_steps=20,
            # The fine-tuning batches; a lower LR, rungs and checkpoints every 20 steps.
            train=replace(
                base,
                max_steps=0,
                lr=2e-3,
                warmup_steps=5,
                eval_every=20,
                checkpoint_every=20,
                spec_augment=True,
            ),
            lr_gates=0.1,
            lr_lambda=0.1,
        ),
        # Seconds on 2 cores; short sentences from a ~35-word slice of the grammar.
        corpus=SynthConfig(
            num_train=60,
            num_dev=12,
            num_test=12,
            vocab_size=40,
            min_words=3,
            max_words=8,
            engines=("espeak-ng", "flite"),
            engine_weights=(0.6, 0.4),
            espeak_accents=("en-us", "en", "en-gb-scotland"),
            espeak_voices_per_split=12,
            settings_per_voice=2,
        ),
    )


def _demo() -> Preset:
    # Sized for ~1.5 h on one CPU core: small batches (many updates), CTC aux for fast
    # alignment. 3000 steps plateaued at ~24 % dev WER once the cosine LR had decayed.
    base = TrainConfig(
        max_steps=7000,
        lr=2e-3,
        warmup_steps=250,
        max_frames=8000,
        max_batch=48,
        ctc_weight=0.3,
        eval_every=500,
        log_every=50,
        checkpoint_every=250,
    )
    return Preset(
        name="demo",
        vocab_size=128,
        features=FeatureConfig(),
        # Causal convolution + dynamic chunk training: one teacher decodes full-context and
        # streaming (chunks of 8 frames = 0.64 s, 4 chunks of left context).
        encoder=ConformerConfig.uniform(
            num_layers=6,
            d_model=144,
            num_heads=4,
            ffn_dim=576,
            subsampling=8,
            subsampling_channels=32,
            kernel_size=15,
            dropout=0.1,
            max_rel_pos=32,
            streaming=True,
            dynamic_chunks=True,
            chunk_size=8,
            left_chunks=4,
        ),
        pred_dim=160,
        joint_dim=160,
        bestrq=BestRqConfig(),
        pretrain=replace(
            base, max_steps=150, lr=1e-3, warmup_steps=30, eval_every=0, spec_augment=False
        ),
        finetune=base,
        # A demo trial is a few CPU minutes: 200 pruning steps (target reached by step 100)
        # and 50 mask-free fine-tuning steps; gate and lambda LRs as for tiny.
        compress=CompressRecipe(
            prune_steps=200,
            finetune_steps=50,
            target_warmup_steps=100,
            train=replace(
                base,
                max_steps=0,
                lr=5e-4,
                warmup_steps=20,
                max_frames=6000,
                max_batch=32,
                eval_every=50,
                log_every=25,
                checkpoint_every=50,
            ),
            lr_gates=0.1,
            lr_lambda=0.1,
        ),
        # The README main job on 2 CPU cores: ~250 words, ~6,600 utterances, a few minutes.
        corpus=SynthConfig(),
    )


def _paper() -> Preset:
    # LibriSpeech-scale, GPU cluster (conformer-S-like).
    base = TrainConfig(
        max_steps=150000,
        lr=1e-3,
        warmup_steps=10000,
        # 0: auto, the most padded frames whose estimated peak fits the device
        # (`kdprune.train.memory`; 24 GB, bf16: ~142k frames of 12 s utterances).
        max_frames=0,
        max_batch=256,
        ctc_weight=0.3,
        eval_every=5000,
        log_every=100,
        checkpoint_every=2000,
    )
    return Preset(
        name="paper",
        vocab_size=1024,
        features=FeatureConfig(),
        encoder=ConformerConfig.uniform(
            num_layers=16,
            d_model=256,
            num_heads=4,
            ffn_dim=1024,
            subsampling=4,
            subsampling_channels=256,
            kernel_size=31,
            dropout=0.1,
            max_rel_pos=64,
        ),
        pred_dim=640,
        joint_dim=512,
        bestrq=BestRqConfig(codebook_size=8192),
        pretrain=replace(base, max_steps=200000, lr=2e-3),
        finetune=base,
        # DESIGN §4 defaults (weights 2e-4, gates and lambda 0.02).
        compress=CompressRecipe(
            prune_steps=20000,
            finetune_steps=5000,
            target_warmup_steps=10000,
            train=replace(
                base,
                max_steps=0,
                lr=2e-4,
                warmup_steps=1000,
                eval_every=2000,
                checkpoint_every=1000,
            ),
        ),
        # ~25k WordNet example sentences over an ~18.5k-word vocabulary, each train
        # sentence spoken twice on average (~50 h of audio).
        corpus=SynthConfig(
            num_train=50000,
            num_dev=1000,
            num_test=1000,
            grammar="wordnet",
            vocab_size=20000,
            min_words=4,
            max_words=20,
            max_duration=12.0,
            espeak_voices_per_split=1000,
            settings_per_voice=24,
        ),
    )


def _paper_ssl_large() -> Preset:
    """`paper` for an imported 600M-class SSL conformer (Wav2Vec2-Conformer large, relative
    or rotary: `kdprune import`, then `finetune --preset paper-ssl-large --init DIR`, which
    takes the import's encoder and front end over this preset's).

    Sized for one 80 GB GPU per worker, bf16 autocast; ESTIMATES, not measured:
    - static: 0.6 B params × (4 B weights + 4 grads + 8 AdamW) ≈ 9.6 GB, plus the frozen
      teacher for KD (2.4 GB fp32) ≈ 12 GB;
    - activations: ~34·d bytes per encoder frame and layer (+ attention scores, 5·heads·T
      bytes) ≈ 3.7 MB per 20 ms frame over 24 layers at d = 1024 and 30 s utterances;
      the frozen feature encoder keeps none;
    - RNN-T joint (B·T·U·V, 1025 classes, fp32 logits and grads) ≈ 2 × 4 GB per 4 min of
      audio at 50 frames/s and ~3 tokens/s;
    so 240 s of audio (24,000 input frames of 10 ms) per GPU batch ≈ 12 + 45 + 8 + 8
    (allocator, workspace) ≈ 73 GB. Halve max_frames on 40 GB GPUs (and double workers).
    LRs as wav2vec 2.0 large fine-tuning (5e-5 peak, 10 % warm-up); gates and λ as paper.
    """
    large = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
             "intermediate_size": 4096, "conv_dim": [512] * 7, "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
             "conv_stride": [5, 2, 2, 2, 2, 2, 2], "conv_bias": True}  # fmt: skip
    paper = _paper()
    base = replace(
        paper.finetune,
        max_steps=80000,
        lr=5e-5,
        warmup_steps=8000,
        max_frames=24000,  # 240 s of audio per GPU batch (see the estimate above)
        max_batch=32,
        spec_augment=False,  # log-mel SpecAugment does not apply to waveform frames
        eval_every=4000,
        checkpoint_every=2000,
    )
    return replace(
        paper,
        name="paper-ssl-large",
        features=FeatureConfig(n_mels=FRAME, hop_length=FRAME, kind="waveform"),
        encoder=encoder_config({**large, "position_embeddings_type": "relative"}),
        pretrain=base,  # unused: the encoder comes pre-trained
        finetune=base,
        compress=replace(
            paper.compress,
            train=replace(base, max_steps=0, lr=2e-5, warmup_steps=1000, eval_every=2000),
        ),
    )
