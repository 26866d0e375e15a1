"""Manifests and audio loading on real (espeak-ng) audio: every bad input gives one clear
error that names the file and the line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kdprune.data.audio import SAMPLE_RATE, AudioError, load_audio, resample, write_wav
from kdprune.data.manifest import (
    ManifestError,
    Utterance,
    normalise_text,
    read_manifest,
    write_manifest,
)
from kdprune.data.tts import Voice, speak


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """About a second of real speech at 16 kHz."""
    return speak(
        Voice(engine="espeak-ng", name="en-us", variant="m1", rate=1.0, pitch=1.0),
        "turn on the kitchen lights",
    )


@pytest.fixture()
def good_wav(tmp_path, speech) -> Path:
    path = tmp_path / "audio" / "good.wav"
    write_wav(path, speech)
    return path


def test_normalise_text():
    assert normalise_text("Turn ON the living-room lights, please!") == (
        "turn on the living room lights please"
    )
    assert normalise_text("  It’s 7  o'clock — “now”/later. ") == "it's 7 o'clock now later"
    assert normalise_text("Café 'déjà-vu' dogs'") == "cafe deja vu dogs"
    assert normalise_text("?!...") == ""


def test_roundtrip_relative_and_absolute_paths(tmp_path, good_wav, speech):
    outside = tmp_path.parent / f"{tmp_path.name}-outside.wav"
    write_wav(outside, speech)
    try:
        dur = len(speech) / SAMPLE_RATE
        utts = [
            Utterance(good_wav, dur, "turn on the kitchen lights"),
            Utterance(outside, dur, "x"),
        ]
        path = write_manifest(tmp_path / "m.jsonl", utts)
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        assert lines[0]["audio_filepath"] == "audio/good.wav"  # under the folder: relative
        assert lines[1]["audio_filepath"] == str(outside)  # elsewhere: absolute
        back = read_manifest(path)
        assert [u.audio_filepath for u in back] == [good_wav, outside]
        assert all(u.audio_filepath.is_absolute() for u in back)
        assert back[0].text == "turn on the kitchen lights"
        assert back[0].duration == pytest.approx(dur, abs=1e-4)
        absolute = write_manifest(tmp_path / "abs.jsonl", utts, absolute=True)
        assert json.loads(absolute.read_text().splitlines()[0])["audio_filepath"] == str(good_wav)
    finally:
        outside.unlink()


def _bad_cases(tmp: Path, speech: np.ndarray) -> dict[str, tuple[str, str]]:
    """name -> (second manifest line, expected words in the error)."""
    corrupt = tmp / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage" + bytes(range(256)))
    empty = tmp / "empty.wav"
    sf.write(str(empty), np.zeros(0, dtype=np.float32), SAMPLE_RATE, subtype="PCM_16")

    def line(audio="audio/good.wav", duration=1.0, text="hello world", drop=None) -> str:
        d = {"audio_filepath": audio, "duration": duration, "text": text}
        d.pop(drop, None)
        return json.dumps(d)

    return {
        "missing audio": (line(audio="audio/nope.wav"), "not found"),
        "empty text": (line(text=""), "empty"),
        "punctuation-only text": (line(text="?!"), "empty"),
        "text not a string": (line(text=5), "string"),
        "invalid JSON": ('{"audio_filepath": "audio/good.wav", "duration": 1.0,', "invalid JSON"),
        "not an object": ("[1, 2]", "object"),
        "missing key": (line(drop="duration"), "missing key"),
        "negative duration": (line(duration=-1), "positive"),
        "duration not a number": (line(duration="1.0"), "number"),
        "corrupt audio": (line(audio=str(corrupt)), "cannot read"),
        "zero-length audio": (line(audio=str(empty)), "zero length"),
    }


def test_each_bad_line_gives_one_clear_error(tmp_path, good_wav, speech):
    good = json.dumps({"audio_filepath": "audio/good.wav", "duration": 1.0, "text": "Hi there"})
    for name, (bad, words) in _bad_cases(tmp_path, speech).items():
        path = tmp_path / "bad.jsonl"
        path.write_text(f"{good}\n\n{bad}\n{good}\n")  # blank line 2: the bad one is line 3
        with pytest.raises(ManifestError) as err:
            read_manifest(path)
        msg = str(err.value)
        assert msg.startswith(f"{path.resolve()}:3: "), (name, msg)
        assert words in msg, (name, msg)


def test_missing_audio_allowed_without_check(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"audio_filepath": "a.wav", "duration": 2, "text": "Yes"}) + "\n")
    [u] = read_manifest(path, check_audio=False)
    assert u == Utterance(tmp_path.resolve() / "a.wav", 2.0, "yes")


def test_empty_manifest(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    with pytest.raises(ManifestError, match="empty"):
        read_manifest(path)
    with pytest.raises(ManifestError, match="cannot read"):
        read_manifest(tmp_path / "absent.jsonl")


def test_load_audio_converts_stereo_44k(tmp_path, speech):
    left = resample(speech, SAMPLE_RATE, 44100)
    path = tmp_path / "stereo.wav"
    sf.write(str(path), np.stack([left, 0.5 * left], axis=1), 44100, subtype="PCM_16")
    x = load_audio(path)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(len(x) - len(speech)) <= 2
    assert np.corrcoef(x, 0.75 * speech[: len(x)])[0, 1] > 0.99  # the downmix of both channels
    # A manifest over that file reads fine too.
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"audio_filepath": "stereo.wav", "duration": 1, "text": "a"}))
    assert read_manifest(manifest)[0].audio_filepath == path


def test_load_audio_errors_name_the_file(tmp_path, speech):
    cases = _bad_cases(tmp_path, speech)  # writes corrupt.wav and empty.wav
    assert cases
    for name, words in [("corrupt.wav", "cannot read"), ("empty.wav", "zero length")]:
        with pytest.raises(AudioError, match=words) as err:
            load_audio(tmp_path / name)
        assert str(tmp_path / name) in str(err.value)
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "nope.flac")


def test_write_wav_is_pcm16_mono(tmp_path, speech):
    path = tmp_path / "x.wav"
    write_wav(path, np.concatenate([speech, [3.0, -3.0]]))  # out of range: clipped
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")
    x = load_audio(path)
    assert len(x) == len(speech) + 2 and np.abs(x).max() <= 1.0
    assert not list(tmp_path.glob(".*tmp*"))  # no temp file left behind
