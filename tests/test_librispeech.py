"""Importing a tiny LibriSpeech-layout tree with real (espeak-ng) speech in FLAC."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf

from kdprune.data.audio import SAMPLE_RATE, load_audio
from kdprune.data.librispeech import import_librispeech
from kdprune.data.manifest import read_manifest
from kdprune.data.tts import Voice, speak

# subset -> [(speaker, chapter, [transcripts])]
TREE = {
    "train-clean-100": [(19, 198, ["TURN ON THE LIGHTS", "OPEN THE DOOR"]), (26, 495, ["HELLO"])],
    "dev-clean": [(84, 121123, ["GOOD MORNING"])],
    "test-clean": [(1089, 134686, ["IT'S RAINING AGAIN", "CLOSE THE WINDOW"])],
}


def _build(root: Path) -> dict[str, list[tuple[Path, str]]]:
    """Write the tree under root/LibriSpeech -> subset -> [(flac, transcript)]."""
    voice = Voice(engine="espeak-ng", name="en-us", variant="m1", rate=1.3, pitch=1.0)
    made: dict[str, list[tuple[Path, str]]] = {}
    for subset, chapters in TREE.items():
        for spk, chap, texts in chapters:
            folder = root / "LibriSpeech" / subset / str(spk) / str(chap)
            folder.mkdir(parents=True)
            lines = []
            for i, text in enumerate(texts):
                utt_id = f"{spk}-{chap}-{i:04d}"
                flac = folder / f"{utt_id}.flac"
                sf.write(str(flac), speak(voice, text.lower()), SAMPLE_RATE, format="FLAC")
                lines.append(f"{utt_id} {text}")
                made.setdefault(subset, []).append((flac, text))
            (folder / f"{spk}-{chap}.trans.txt").write_text("\n".join(lines) + "\n")
    return made


def test_import_librispeech(tmp_path):
    made = _build(tmp_path / "data")
    out = tmp_path / "manifests"
    manifests = import_librispeech(tmp_path / "data", out)  # the folder holding LibriSpeech/
    assert manifests == {s: (out / f"{s}.jsonl").resolve() for s in ("train", "dev", "test")}
    for split, subset in [
        ("train", "train-clean-100"),
        ("dev", "dev-clean"),
        ("test", "test-clean"),
    ]:
        raw = [json.loads(line) for line in manifests[split].read_text().splitlines()]
        assert all(Path(r["audio_filepath"]).is_absolute() for r in raw)
        utts = read_manifest(manifests[split])
        assert [(u.audio_filepath, u.text) for u in utts] == [
            (flac.resolve(), text.lower()) for flac, text in made[subset]
        ]
        for u in utts:
            assert u.duration == pytest.approx(
                len(load_audio(u.audio_filepath)) / SAMPLE_RATE, abs=1e-5
            )


def test_only_present_subsets_and_errors(tmp_path):
    _build(tmp_path)
    root = tmp_path / "LibriSpeech"
    # Splits not named get the default subsets, absent ones skipped (only train-clean-100
    # of the three train subsets is here); a subset named must exist.
    got = import_librispeech(root, tmp_path / "m", {"test": ["dev-clean"]})
    assert set(got) == {"train", "dev", "test"}
    assert got["test"].read_text() == got["dev"].read_text()
    with pytest.raises(FileNotFoundError, match=r"\['test-other'\] not found under"):
        import_librispeech(root, tmp_path / "m1", {"dev": ["dev-clean"], "test": ["test-other"]})
    assert not (tmp_path / "m1").exists()  # nothing half-written
    with pytest.raises(FileNotFoundError, match="no LibriSpeech subsets"):
        import_librispeech(tmp_path / "empty", tmp_path / "m2")
    # A transcript line whose audio is missing names the transcript file and line.
    trans = root / "test-clean" / "1089" / "134686" / "1089-134686.trans.txt"
    trans.write_text(trans.read_text() + "1089-134686-0099 LOST AUDIO\n")
    with pytest.raises(ValueError, match=rf"{trans}:3: audio file not found"):
        import_librispeech(root, tmp_path / "m3")
