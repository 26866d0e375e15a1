"""The synthetic corpus: the tiny preset is synthesised for real (espeak-ng + flite) and
checked for format, held-out voices and sentences, determinism, idempotence and resuming."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import pytest
import soundfile as sf

from kdprune.data.audio import SAMPLE_RATE
from kdprune.data.grammar import CommandGrammar, WordnetSentences, compose_splits, vocabulary
from kdprune.data.manifest import manifest_words, read_manifest
from kdprune.data.synth import (
    MARKER,
    SPLITS,
    TTSError,
    Voice,
    check_engines,
    plan_corpus,
    speak,
    synth_config,
    synth_corpus,
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, Path], float]:
    out = tmp_path_factory.mktemp("synth") / "tiny"
    t0 = time.perf_counter()
    manifests = synth_corpus(synth_config("tiny"), out, num_workers=2)
    return out, manifests, time.perf_counter() - t0


def test_manifests_and_audio(corpus):
    out, manifests, seconds = corpus
    assert seconds < 30
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
            assert 0.5 < u.duration < cfg.max_duration
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


def test_second_call_is_a_fast_no_op(corpus):
    out, manifests, _ = corpus
    before = {p: p.stat().st_mtime_ns for p in [out / MARKER, out / "corpus.json"]}
    t0 = time.perf_counter()
    assert synth_corpus(synth_config("tiny"), out) == manifests
    assert time.perf_counter() - t0 < 1.0
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
        speak(Voice("festival", "nosuchvoice", "", 1.0, 1.0), "hello there")
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
