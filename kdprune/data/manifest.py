"""NeMo-style JSON Lines manifests (DESIGN §3): one utterance a line,
``{"audio_filepath": "...", "duration": 2.41, "text": "lower case words"}``.

A relative ``audio_filepath`` is relative to the manifest's folder, so a corpus folder can
be moved as a whole. Every problem is reported as one ManifestError naming the manifest
and the 1-based line, so a bad line in a 100k-line manifest is found at once.
"""

from __future__ import annotations

import json
import math
import os
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from kdprune.utils import atomic_write_text

REQUIRED_KEYS = ("audio_filepath", "duration", "text")

# Apostrophe look-alikes that should count as apostrophes (it’s -> it's).
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})


def normalise_text(s: str) -> str:
    """Lower case; keep letters, digits and apostrophes inside words; everything else
    (punctuation, hyphens, dashes, slashes, quotes) becomes a word break; single spaces.

    >>> normalise_text("Turn ON the living-room lights, please!")
    'turn on the living room lights please'
    """
    s = unicodedata.normalize("NFKD", s.translate(_APOSTROPHES).lower())
    # Drop combining accents (café -> cafe); map any other non-word character to a space.
    s = "".join(c for c in s if not unicodedata.combining(c))
    s = "".join(c if (c.isalnum() or c == "'") else " " for c in s)
    # Apostrophes at word ends are quote marks ('pick', dogs' sounds like dogs).
    return " ".join(t.strip("'") for t in s.split() if t.strip("'"))


@dataclass(frozen=True)
class Utterance:
    audio_filepath: Path  # absolute path of the audio file
    duration: float  # seconds
    text: str  # normalised transcript (normalise_text)


class ManifestError(ValueError):
    """A manifest is malformed; the message names the file and the 1-based line."""


def _check_audio_file(path: Path) -> str | None:
    """Why `path` cannot be used as audio, or None when its header reads fine."""
    if not path.is_file():
        return f"audio file not found: {path}"
    try:
        info = sf.info(str(path))
    except (RuntimeError, OSError, ValueError, TypeError) as e:
        return f"cannot read audio file {path} ({e})"
    if info.frames <= 0:
        return f"audio file {path} holds no samples (zero length)"
    return None


def _parse_line(line: str, folder: Path, check_audio: bool) -> Utterance:
    """One manifest line -> Utterance; raises ValueError with the reason (no location)."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"invalid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in obj]
    if missing:
        raise ValueError(f"missing key(s) {missing}; each line needs {list(REQUIRED_KEYS)}")
    audio, duration, text = (obj[k] for k in REQUIRED_KEYS)
    if not isinstance(audio, str) or not audio.strip():
        raise ValueError(f"'audio_filepath' must be a non-empty string, got {audio!r}")
    if isinstance(duration, bool) or not isinstance(duration, (int, float)):
        raise ValueError(f"'duration' must be a number of seconds, got {duration!r}")
    if not math.isfinite(duration) or duration <= 0:
        raise ValueError(f"'duration' must be positive, got {duration!r}")
    if not isinstance(text, str):
        raise ValueError(f"'text' must be a string, got {text!r}")
    norm = normalise_text(text)
    if not norm:
        raise ValueError(f"'text' is empty after normalisation (was {text!r})")
    path = Path(audio).expanduser()
    path = Path(os.path.normpath(path if path.is_absolute() else folder / path))
    if check_audio:
        problem = _check_audio_file(path)
        if problem:
            raise ValueError(problem)
    return Utterance(audio_filepath=path, duration=float(duration), text=norm)


def read_manifest(path: str | Path, *, check_audio: bool = True) -> list[Utterance]:
    """Read a JSON Lines manifest -> utterances with absolute paths and normalised text.

    Blank lines are skipped and extra keys ignored. With `check_audio`, every audio file
    must exist and have a readable, non-empty header. Raises ManifestError
    ("<file>:<line>: <reason>") on the first problem, or when there is no utterance.
    """
    path = Path(path).resolve()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError(f"{path}: cannot read manifest ({e})") from e
    folder = path.parent
    utts = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            utts.append(_parse_line(line, folder, check_audio))
        except ValueError as e:
            raise ManifestError(f"{path}:{lineno}: {e}") from None
    if not utts:
        raise ManifestError(f"{path}: manifest is empty (no utterances)")
    return utts


def write_manifest(
    path: str | Path,
    utts: Iterable[Utterance],
    relative_to: Path | None = None,
    *,
    absolute: bool = False,
) -> Path:
    """Write utterances as a JSON Lines manifest, atomically (temp file + rename).

    Audio files inside `relative_to` (default: the manifest's folder) are written relative
    to the manifest's folder, so the folder can be moved as a whole; others (or all, with
    `absolute=True`) are written as absolute paths. Returns the manifest's absolute path.
    """
    path = Path(path).resolve()
    folder = path.parent
    base = Path(relative_to).resolve() if relative_to is not None else folder
    lines = []
    for u in utts:
        audio = Path(u.audio_filepath).resolve()
        if not absolute and audio.is_relative_to(base):
            audio_str = os.path.relpath(audio, folder)
        else:
            audio_str = str(audio)
        record = {"audio_filepath": audio_str, "duration": round(float(u.duration), 6)}
        record["text"] = u.text
        lines.append(json.dumps(record, ensure_ascii=False))
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return path


def manifest_words(utts: Iterable[Utterance]) -> set[str]:
    """The set of words spoken in a list of utterances."""
    return {w for u in utts for w in u.text.split()}
