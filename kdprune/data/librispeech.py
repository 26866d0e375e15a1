"""LibriSpeech (or any tree in its layout) -> NeMo manifests.

Layout: ``<root>/<subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt`` with one
``<utterance-id> <TRANSCRIPT>`` line per utterance, and ``<utterance-id>.flac`` beside it.
`root` may also be the folder that holds ``LibriSpeech/`` (as the tarballs unpack).
"""

from __future__ import annotations

from pathlib import Path

import soundfile as sf

from kdprune.data.manifest import Utterance, normalise_text, write_manifest
from kdprune.utils import log

DEFAULT_SUBSETS: dict[str, list[str]] = {
    "train": ["train-clean-100", "train-clean-360", "train-other-500"],
    "dev": ["dev-clean"],
    "test": ["test-clean"],
}


def import_librispeech(
    root: Path, out_dir: Path, subsets: dict[str, list[str]] | None = None
) -> dict[str, Path]:
    """Write ``out_dir/<split>.jsonl`` (absolute audio paths, durations from the audio
    headers) for each split whose subsets exist under `root` -> {split: manifest path}.

    `subsets` maps split -> LibriSpeech subsets, in the order their utterances are listed;
    splits it leaves out get `DEFAULT_SUBSETS`, whose absent subsets are skipped (a full
    LibriSpeech has all three train subsets, a 100 h download only train-clean-100). A
    subset named in `subsets` must exist. Raises FileNotFoundError when a named subset or
    every default one is missing, ValueError naming the file and line for a malformed
    transcript or a missing/unreadable audio file.
    """
    root = Path(root).expanduser().resolve()
    named = {k: list(v) for k, v in (subsets or {}).items()}
    unknown = sorted(set(named) - set(DEFAULT_SUBSETS))
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; valid: {list(DEFAULT_SUBSETS)}")
    subsets = {split: named.get(split, names) for split, names in DEFAULT_SUBSETS.items()}
    wanted = [s for names in subsets.values() for s in names]
    if not any((root / s).is_dir() for s in wanted) and (root / "LibriSpeech").is_dir():
        root = root / "LibriSpeech"
    absent = [s for names in named.values() for s in names if not (root / s).is_dir()]
    if absent:
        have = sorted(p.name for p in root.glob("*/") if p.is_dir()) if root.is_dir() else []
        raise FileNotFoundError(
            f"LibriSpeech subset(s) {absent} not found under {root} (it holds {have})"
        )
    out: dict[str, Path] = {}
    for split, names in subsets.items():
        present = [n for n in names if (root / n).is_dir()]
        if not present:
            continue
        utts = [u for n in present for u in _read_subset(root / n)]
        if not utts:
            raise ValueError(f"{root}: subsets {present} hold no transcripts (*.trans.txt)")
        out[split] = write_manifest(Path(out_dir) / f"{split}.jsonl", utts, absolute=True)
        hours = sum(u.duration for u in utts) / 3600
        log(f"librispeech {split}: {present} -> {len(utts)} utterances, {hours:.2f} h")
    if not out:
        raise FileNotFoundError(
            f"no LibriSpeech subsets under {root}: looked for {wanted} "
            "(each <subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt + .flac)"
        )
    missing = [s for s in subsets if s not in out]
    if missing:
        log(f"librispeech: no subsets found for split(s) {missing}")
    return out


def _read_subset(subset_dir: Path) -> list[Utterance]:
    utts = []
    for trans in sorted(subset_dir.glob("*/*/*.trans.txt")):
        lines = trans.read_text(encoding="utf-8").splitlines()
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            utt_id, _, text = line.strip().partition(" ")
            where = f"{trans}:{lineno}"
            if not normalise_text(text):
                raise ValueError(f"{where}: expected '<utterance-id> <transcript>', got {line!r}")
            audio = trans.parent / f"{utt_id}.flac"
            if not audio.is_file():
                raise ValueError(f"{where}: audio file not found: {audio}")
            try:
                info = sf.info(str(audio))
            except RuntimeError as e:
                raise ValueError(f"{where}: cannot read audio file {audio} ({e})") from e
            if info.frames <= 0:
                raise ValueError(f"{where}: audio file {audio} holds no samples")
            utts.append(Utterance(audio, info.frames / info.samplerate, normalise_text(text)))
    return utts
