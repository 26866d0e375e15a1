"""Model cards: a Markdown summary (+ training-curve plot) written into a model directory
from the provenance that `finetune` records in config.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdprune.utils import atomic_write_text, read_json


def plot_curve(history: list[dict[str, Any]], out: Path, title: str) -> Path | None:
    pts = [(h["wall_s"] / 60, 100 * h["wer_dev"]) for h in history if "wer_dev" in h]
    if not pts:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o")
    ax.set_xlabel("wall-clock minutes")
    ax.set_ylabel("dev WER (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def write_model_card(model_dir: Path, corpus: dict[str, Any] | None = None) -> Path:
    """Write MODEL_CARD.md (and curve.png) for a fine-tuned model directory."""
    model_dir = Path(model_dir)
    meta = read_json(model_dir / "config.json")
    extra, model = meta["extra"], meta["model"]
    m = extra.get("metrics", {})
    hist = extra.get("history", [])
    curve = plot_curve(
        hist, model_dir / "curve.png", f"{extra.get('preset')} teacher: dev WER vs time"
    )
    enc = model["encoder"]
    layer = enc["layers"][0]
    rows = "\n".join(
        f"| {h['step']} | {h['wall_s'] / 60:.1f} | {100 * h['wer_dev']:.2f} |"
        for h in hist
        if "wer_dev" in h
    )
    train = extra.get("train", {})
    text = f"""# Model card: `{extra.get("preset")}` teacher (dense conformer RNN-T)

Produced by this project's own command:

```
{extra.get("command")}
```

| | |
|---|---|
| finished | {extra.get("finished")} |
| machine | {extra.get("machine")} |
| seed | {extra.get("seed")} |
| encoder init | {extra.get("init")} (BEST-RQ SSL pre-training of the same encoder on the train audio) |
| steps | {m.get("steps")} |
| training wall time | {m.get("train_wall_s", 0) / 60:.1f} min (fine-tuning; excludes pre-training) |
| **dev WER** | **{100 * m.get("wer_dev", float("nan")):.2f} %** (greedy, {len(hist) and "full dev set"}) |
| **test WER** | **{100 * m.get("wer_test", float("nan")):.2f} %** (greedy; held-out voices and held-out sentences) |
| params (encoder+predictor+joiner) | {m.get("params"):,} |
| encoder params | {m.get("encoder_params"):,} |
| latency (batch 1, CPU, {m.get("latency_threads")} thread(s)) | {m.get("latency_ms_per_audio_s", 0):.1f} ms per audio second (RTF {m.get("rtf", 0):.3f}) |

**Architecture**: conformer, {len(enc["layers"])} layers, d_model {enc["d_model"]}, {layer["num_heads"]} heads x
{layer["head_dim"]}, FFN {layer["ffn1_dim"]}, conv kernel {enc["kernel_size"]}, subsampling x{enc["subsampling"]},
per-head relative-position bias; LSTM predictor {model["pred_dim"]}; joiner {model["joint_dim"]};
sentencepiece vocabulary {model["vocab_size"]} (+ blank). CTC auxiliary loss weight {train.get("ctc_weight")}.

**Training**: AdamW peak LR {train.get("lr")}, {train.get("warmup_steps")} warm-up steps then cosine
decay, batches of at most {train.get("max_frames")} feature frames, SpecAugment, {train.get("max_steps")} steps.

**Corpus**: the embedded `{extra.get("preset")}` corpus, regenerated identically on any machine
by `kdprune data synth --preset {extra.get("preset")}` (same seed -> same sentences, voices and
tokenizer){": " + corpus_line(corpus) if corpus else "."}

## Training curve (dev WER on the first 200 dev utterances)

| step | minutes | dev WER % |
|---|---|---|
{rows}

{"![curve](curve.png)" if curve else ""}
"""
    out = model_dir / "MODEL_CARD.md"
    atomic_write_text(out, text)
    return out


def corpus_line(corpus: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in corpus.items())
