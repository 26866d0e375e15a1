"""The synthetic corpus: the tiny preset is synthesised for real (espeak-ng + flite) and
checked for format, held-out voices and sentences, determinism, idempotence and resuming."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kdprune.data.audio import SAMPLE_RATE
from kdprune.data.augment import add_edges
from kdprune.data.grammar import CommandGrammar, WordnetSentences, compose_splits, vocabulary
from kdprune.data.manifest import manifest_words, read_manifest
from kdprune.data.synth import MARKER, SPLITS, synth_config, synth_corpus
from kdprune.data.synth_plan import plan_corpus
from kdprune.data.tts import TTSError, Voice, check_engines, speak


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, Path], float]:
    out = tmp_path_factory.mktemp("synth") / "tiny"
    manifests = synth_corpus(synth_config("tiny"), out, num_workers=2)
    return out, manifests, None


def test_manifests_and_audio(corpus):
    out, manifests, _ = corpus
    assert set(manifests) == set(SPLITS) and all(p.is_absolute() for p in manifests.values())
    cfg = synth_config("tiny")
    counts = {"train": cfg.num_train, "dev": cfg.num_dev, "test": cfg.num_test}
    for split, path in manifests.items():
        assert path == out / f"{split}.jsonl"
        utts = read_manifest(path)
        assert len(utts) == counts[split]
        for u in utts:
            assert u.audio_filepath.is_relative_to(out / "audio" / split)
            info = sf.info(str(u.audio_filepath))
            assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")
            assert abs(info.frames / SAMPLE_RATE - u.duration) < 1e-3
            # train audio may carry up to edge_silence_s[1] of added silence at each end
            extra = 2 * cfg.edge_silence_s[1] if split == "train" else 0.0
            assert 0.5 < u.duration < cfg.max_duration + extra
            assert cfg.min_words <= len(u.text.split()) <= cfg.max_words
    assert (out / MARKER).is_file()


def test_held_out_voices_and_sentences(corpus):
    out, manifests, _ = corpus
    info = json.loads((out / "corpus.json").read_text())
    voices = {s: set(info["splits"][s]["voices"]) for s in SPLITS}
    assert not voices["train"] & (voices["dev"] | voices["test"])
    # Held out means the speaker, not just rate and pitch: no espeak-ng variant or flite
    # voice of dev/test speaks in train.
    speaker = lambda v: v.rsplit(":", 2)[0].split("+")[-1]  # noqa: E731
    train_speakers = {speaker(v) for v in voices["train"]}
    assert not train_speakers & {speaker(v) for s in ("dev", "test") for v in voices[s]}
    # Every engine speaks in train.
    assert all(n > 0 for n in info["splits"]["train"]["engines"].values())
    texts = {s: [u.text for u in read_manifest(manifests[s])] for s in SPLITS}
    assert not set(texts["train"]) & (set(texts["dev"]) | set(texts["test"]))
    assert not set(texts["dev"]) & set(texts["test"])
    train_words = manifest_words(read_manifest(manifests["train"]))
    assert set(info["vocabulary"]) == train_words
    for s in ("dev", "test"):
        assert manifest_words(read_manifest(manifests[s])) <= train_words


def test_deterministic_plan(corpus):
    out, manifests, _ = corpus
    cfg = synth_config("tiny")
    a, b = plan_corpus(cfg), plan_corpus(cfg)
    assert a == b
    info = json.loads((out / "corpus.json").read_text())
    for s in SPLITS:
        assert info["splits"][s]["voices"] == sorted({u.voice.id for u in a[s]})
        assert [u.text for u in read_manifest(manifests[s])] == [u.text for u in a[s]]
    other = plan_corpus(dataclasses.replace(cfg, seed=1))
    assert [u.text for u in other["train"]] != [u.text for u in a["train"]]


def test_second_call_is_a_no_op(corpus):
    out, manifests, _ = corpus
    before = {p: p.stat().st_mtime_ns for p in [out / MARKER, out / "corpus.json"]}
    assert synth_corpus(synth_config("tiny"), out) == manifests
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_resume_after_crash(corpus, tmp_path):
    """A run killed mid-way (no marker, some audio missing) completes on rerun, reusing the
    audio already there; the remade files are identical to the lost ones."""
    out, manifests, _ = corpus
    copy = tmp_path / "tiny"
    shutil.copytree(out, copy)
    (copy / MARKER).unlink()
    (copy / "test.jsonl").unlink()
    wavs = sorted((copy / "audio").rglob("*.wav"))
    lost = {p: p.read_bytes() for p in wavs[::20]}
    for p in lost:
        p.unlink()
    kept = {p: p.stat().st_mtime_ns for p in wavs if p not in lost}
    synth_corpus(synth_config("tiny"), copy, num_workers=1)
    assert (copy / MARKER).is_file() and (copy / "test.jsonl").is_file()
    assert all(p.read_bytes() == data for p, data in lost.items())
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())
    assert (copy / "train.jsonl").read_text() == manifests["train"].read_text()


def test_presets_and_missing_voices():
    with pytest.raises(ValueError, match="demo"):
        synth_config("huge")
    demo = synth_config("demo")
    assert set(demo.engines) == {"espeak-ng", "flite", "festival"}
    assert not set(demo.espeak_train_variants) & set(demo.espeak_test_variants)
    assert not set(demo.flite_train_voices) & set(demo.flite_test_voices)
    tiny = synth_config("tiny")
    with pytest.raises(TTSError, match="nosuchvoice"):
        check_engines(dataclasses.replace(tiny, flite_test_voices=("nosuchvoice",)))
    with pytest.raises(TTSError, match="nosuchvariant"):
        check_engines(dataclasses.replace(tiny, espeak_dev_variants=("nosuchvariant",)))
    with pytest.raises(TTSError) as err:
        speak(
            Voice(engine="festival", name="nosuchvoice", variant="", rate=1.0, pitch=1.0),
            "hello there",
        )
    assert "festival" in str(err.value) and "hello there" in str(err.value)


def test_demo_grammar_is_compact_and_splits_are_disjoint():
    vocab = vocabulary("commands")
    assert 150 <= len(vocab) <= 260
    assert {"kitchen", "ninety", "nine", "lights", "o'clock"} <= vocab
    cfg = synth_config("demo")
    counts = {"train": cfg.num_train, "dev": cfg.num_dev, "test": cfg.num_test}
    sents = compose_splits(CommandGrammar(), counts, cfg.seed, cfg.min_words, cfg.max_words)
    assert {s: len(v) for s, v in sents.items()} == counts
    assert len(set(sents["train"])) == cfg.num_train
    train_words = {w for s in sents["train"] for w in s.split()}
    assert train_words == vocab  # every word is heard in train
    for split in ("dev", "test"):
        assert not set(sents[split]) & set(sents["train"])
        assert {w for s in sents[split] for w in s.split()} <= train_words


@pytest.mark.skipif(not Path("/usr/share/wordnet/data.noun").is_file(), reason="no wordnet")
def test_wordnet_source():
    src = WordnetSentences(vocab_size=3000, min_words=4, max_words=20)
    assert len(src.pool) > 1000 and len(src.vocabulary()) <= 3000
    sents = compose_splits(src, {"train": 2000, "dev": 50, "test": 50}, 0, 4, 20)
    train_words = {w for s in sents["train"] for w in s.split()}
    assert not set(sents["test"]) & set(sents["train"])
    assert {w for s in sents["test"] for w in s.split()} <= train_words


def test_padded_test_set_and_silent_train_edges(corpus):
    """Real recordings start and end with silence: train audio gets some, and the corpus
    carries `test_padded.jsonl`, the test set with 0.5 s of digital silence at both ends."""
    out, manifests, _ = corpus
    cfg = synth_config("tiny")
    info = json.loads((out / "corpus.json").read_text())
    assert info["eval_sets"] == {"test_padded": "test_padded.jsonl"}
    test = read_manifest(manifests["test"])
    padded = read_manifest(out / "test_padded.jsonl")
    pad = int(cfg.padded_eval_s * SAMPLE_RATE)
    assert [u.text for u in padded] == [u.text for u in test]
    for u, p in zip(test, padded, strict=True):
        x, _ = sf.read(str(u.audio_filepath), dtype="float32")
        y, _ = sf.read(str(p.audio_filepath), dtype="float32")
        assert len(y) == len(x) + 2 * pad and abs(p.duration - u.duration - 1.0) < 1e-3
        assert not y[:pad].any() and not y[-pad:].any()
        assert np.array_equal(y[pad:-pad], x)


def test_train_edges_add_silence_and_a_noise_floor():
    cfg = synth_config("tiny")
    x = np.full(SAMPLE_RATE, 0.3, np.float32)
    leads, floors = [], []
    for i in range(200):
        y = add_edges(x, np.random.default_rng([0, 0, i, 1]), cfg)
        core = np.flatnonzero(np.abs(y) > 0.25)
        assert len(core) == SAMPLE_RATE  # the speech itself is untouched (up to the floor)
        lead, trail = core[0], len(y) - 1 - core[-1]
        assert max(lead, trail) <= cfg.edge_silence_s[1] * SAMPLE_RATE
        leads.append(lead / SAMPLE_RATE)
        if lead > 100:
            floors.append(float(np.sqrt(np.mean(y[:lead] ** 2))))
    share = np.mean([t > 0 for t in leads])
    assert abs(share - cfg.edge_silence_prob) < 0.1
    silent = np.mean([f == 0.0 for f in floors])
    assert abs(silent - (1 - cfg.floor_noise_prob)) < 0.15
    assert max(floors) < 10 ** (cfg.floor_noise_dbfs[1] / 20) * 1.2
