"""The foundation pipeline on the tiny preset: corpus -> tokenizer -> BEST-RQ -> RNN-T ->
model directory -> evaluate (WER recomputed independently from --output)."""

import json
import subprocess
import sys
from pathlib import Path

import torch

from kdprune.data.batching import collate
from kdprune.data.features import global_stats
from kdprune.eval.decode import beam_decode, greedy_decode
from kdprune.eval.wer import edit_distance
from kdprune.models.model_dir import load_model_dir
from kdprune.models.transducer import ModelConfig, Transducer
from kdprune.pipeline import build_tokenizer, features
from kdprune.presets import get_preset
from kdprune.train.losses import asr_loss


def test_rnnt_overfits_tiny_batch(tiny_workdir, tiny_manifests):
    """A small RNN-T memorises 4 real utterances: greedy and beam decode them exactly."""
    preset = get_preset("tiny")
    tok = build_tokenizer(preset, tiny_manifests, tiny_workdir)
    fs = features(tiny_manifests, preset, tiny_workdir, "train")
    torch.manual_seed(0)
    model = Transducer(
        ModelConfig(
            vocab_size=tok.vocab_size,
            encoder=preset.encoder,
            pred_dim=64,
            joint_dim=64,
            dropout=0.0,
        )
    )
    mean, std = global_stats(fs)
    model.normaliser.mean.copy_(mean)
    model.normaliser.std.copy_(std)
    # The 4 shortest: train audio carries up to 0.8 s of added silence at each end.
    shortest = sorted(range(len(fs.utts)), key=lambda i: fs.utts[i].duration)[:4]
    batch = collate(fs, shortest, tok)
    opt = torch.optim.AdamW(model.parameters(), lr=6e-3)
    for _ in range(1500):  # until memorised (per-utterance NLL 0.02 nats: far below a token's)
        r = asr_loss(model, batch, batch.feats, ctc_weight=0.3)
        if float(r.rnnt) < 0.02:
            break
        opt.zero_grad()
        r.loss.backward()
        opt.step()
    model.eval()
    enc = model.encode(batch.feats, batch.feat_lens)
    greedy = [tok.decode(h) for h in greedy_decode(model, enc.out, enc.lengths)]
    assert greedy == batch.texts, (greedy, batch.texts)
    beam = [
        tok.decode(beam_decode(model, enc.out[i], int(enc.lengths[i]), beam=4)) for i in range(4)
    ]
    assert beam == batch.texts


def test_finetune_writes_self_contained_model_dir(tiny_teacher, tmp_path):
    import shutil

    moved = tmp_path / "copied"
    shutil.copytree(tiny_teacher["model_dir"], moved)
    loaded = load_model_dir(moved)
    assert loaded.model.num_params() == tiny_teacher["params"]
    for k in ("wer_dev", "wer_test", "params", "encoder_params", "latency_ms_per_audio_s", "rtf"):
        assert k in tiny_teacher


def test_finetune_second_call_reuses_output(tiny_workdir, tiny_teacher):
    """The second call returns the first one's model directory without writing to it
    (nothing retrained, nothing rewritten) and with the same metrics."""
    from kdprune.pipeline import finetune

    model_dir = Path(tiny_teacher["model_dir"])
    before = {p: p.stat().st_mtime_ns for p in model_dir.rglob("*")}
    again = finetune("tiny", tiny_workdir, init="ssl")
    assert again["model_dir"] == tiny_teacher["model_dir"]
    assert again["wer_dev"] == tiny_teacher["wer_dev"]
    assert {p: p.stat().st_mtime_ns for p in model_dir.rglob("*")} == before


def test_evaluate_cli_wer_matches_recomputation(tiny_teacher, tiny_manifests, tmp_path):
    out = tmp_path / "hyps.jsonl"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kdprune.cli",
            "evaluate",
            "--model",
            tiny_teacher["model_dir"],
            "--manifest",
            str(tiny_manifests["test"]),
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for k in (
        "wer",
        "num_utterances",
        "params",
        "encoder_params",
        "latency_ms_per_audio_s",
        "rtf",
        "device",
    ):
        assert k in result
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == result["num_utterances"] == 12
    errors = sum(edit_distance(r["reference"].split(), r["hypothesis"].split()) for r in rows)
    words = sum(len(r["reference"].split()) for r in rows)
    assert abs(result["wer"] - errors / words) < 1e-12
    assert result["params"] == tiny_teacher["params"]
