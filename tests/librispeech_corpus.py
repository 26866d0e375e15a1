"""A small corpus in LibriSpeech's layout, spoken by real TTS voices, for the end-to-end
tests of user data (issue 12 item 4; fixture `librispeech_root` in conftest.py).

``<root>/LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<nnnn>.flac`` (16 kHz
FLAC) and ``<speaker>-<chapter>.trans.txt`` (``<utterance-id> UPPER CASE TRANSCRIPT`` per
line), plus SPEAKERS.TXT at the top, as the OpenSLR tarballs unpack. Each speaker is one
TTS voice (espeak-ng accents and variants, flite voices); a subset's speakers are not in
any other subset. Sentences are WordNet example sentences (not the demo's command
grammar), some with apostrophes (IT'S, DON'T). `dev-other` is present but not imported by
default (`kdprune data librispeech` maps train-clean-* to train, dev-clean to dev,
test-clean to test). Sized like the tiny preset's corpus (60 / 12 / 12 utterances): a
tiny model trains on it in about a minute.

Deterministic: the same sentences, voices and audio on every run.
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from kdprune.data.audio import SAMPLE_RATE
from kdprune.data.grammar import WordnetSentences
from kdprune.data.tts import Voice, speak


@dataclass(frozen=True)
class Corpus:
    root: Path  # the folder holding LibriSpeech/ (as the tarballs unpack)
    # subset -> [(utterance id, TRANSCRIPT)], in the order the files were written
    utterances: dict[str, list[tuple[str, str]]]

    def split(self, name: str) -> list[tuple[str, str]]:
        """The utterances `kdprune data librispeech` puts in split `name` by default."""
        return [u for s, utts in self.utterances.items() if SPLIT_OF[s] == name for u in utts]


@dataclass(frozen=True)
class Speaker:
    id: int
    chapters: tuple[int, ...]
    voice: Voice
    per_chapter: int  # utterances per chapter


def _espeak(accent: str, variant: str, rate: float = 1.0) -> Voice:
    return Voice(engine="espeak-ng", name=accent, variant=variant, rate=rate, pitch=1.0)


def _flite(name: str, rate: float = 1.0) -> Voice:
    return Voice(engine="flite", name=name, variant="", rate=rate, pitch=1.0)


# subset -> its speakers (ids and chapter ids in LibriSpeech's style; voices distinct).
SUBSETS: dict[str, tuple[Speaker, ...]] = {
    "train-clean-100": (
        Speaker(19, (198, 227), _espeak("en-us", "m3"), 8),
        Speaker(26, (495, 496), _flite("slt"), 8),
        Speaker(32, (4137, 21625), _espeak("en-gb-scotland", "f2", 1.1), 8),
    ),
    "train-clean-360": (Speaker(100, (121669,), _flite("kal16", 1.1), 12),),
    "dev-clean": (
        Speaker(84, (121123,), _espeak("en", "m5"), 6),
        Speaker(174, (50561,), _flite("awb"), 6),
    ),
    "test-clean": (
        Speaker(1089, (134686,), _espeak("en-us", "f4"), 6),
        Speaker(121, (121726,), _flite("rms"), 6),
    ),
    "dev-other": (Speaker(116, (288045,), _espeak("en-029", "klatt"), 3),),
}
# Which split `kdprune data librispeech` puts each subset in by default (None: left out).
SPLIT_OF = {
    "train-clean-100": "train",
    "train-clean-360": "train",
    "dev-clean": "dev",
    "test-clean": "test",
    "dev-other": None,
}


def sentences() -> dict[str, list[str]]:
    """Subset -> its lower-case sentences, in utterance order: short WordNet examples over
    the 300 most frequent words; every subset starts with one that has an apostrophe."""
    pool = list(WordnetSentences(vocab_size=300, min_words=4, max_words=9).pool)
    random.Random("kdprune-librispeech-test").shuffle(pool)
    quoted = [s for s in pool if "'" in s]
    rest = [s for s in pool if "'" not in s]
    out = {}
    for i, (subset, speakers) in enumerate(SUBSETS.items()):
        n = sum(len(s.chapters) * s.per_chapter for s in speakers)
        out[subset] = [quoted[i], *rest[: n - 1]]
        rest = rest[n - 1 :]
    return out


def build_librispeech(root: Path, join: int = 1, copies: int = 1) -> Corpus:
    """Write the corpus under ``root/LibriSpeech``.

    For timing the stages per hour of audio (README "Your own data"), `join` > 1 makes each
    utterance `join` consecutive sentences of its chapter, 0.3 s apart (LibriSpeech's
    utterances average 12.3 s, ours one sentence, ~2 s), and `copies` > 1 writes every
    train chapter that many times under new chapter ids, each copy's sentences rotated."""
    top = Path(root) / "LibriSpeech"
    texts = sentences()
    gap = np.zeros(int(0.3 * SAMPLE_RATE), dtype=np.float32)
    made: dict[str, list[tuple[str, str]]] = {}
    speakers_txt = [";ID  |SEX| SUBSET           |MINUTES| NAME"]
    for subset, speakers in SUBSETS.items():
        todo = iter(texts[subset])
        for spk in speakers:
            speakers_txt.append(f"{spk.id:<5}| F | {subset:<17}| 0.50 | {spk.voice.id}")
            for chapter in spk.chapters:
                said = [next(todo).upper() for _ in range(spk.per_chapter)]
                audio = [speak(spk.voice, text.lower()) for text in said]
                for k in range(copies if SPLIT_OF[subset] == "train" else 1):
                    chap = f"{chapter}{k:03d}" if k else str(chapter)
                    folder = top / subset / str(spk.id) / chap
                    folder.mkdir(parents=True, exist_ok=True)
                    order = [(i + k) % len(said) for i in range(len(said))]
                    lines = []
                    for n, at in enumerate(range(0, len(order), join)):
                        group = order[at : at + join]
                        utt_id = f"{spk.id}-{chap}-{n:04d}"
                        text = " ".join(said[i] for i in group)
                        wave = np.concatenate([x for i in group for x in (gap, audio[i])][1:])
                        sf.write(str(folder / f"{utt_id}.flac"), wave, SAMPLE_RATE, format="FLAC")
                        lines.append(f"{utt_id} {text}")
                        made.setdefault(subset, []).append((utt_id, text))
                    (folder / f"{spk.id}-{chap}.trans.txt").write_text("\n".join(lines) + "\n")
    (top / "SPEAKERS.TXT").write_text("\n".join(speakers_txt) + "\n")
    return Corpus(Path(root), made)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="write the corpus under ROOT/LibriSpeech")
    ap.add_argument("root", type=Path)
    ap.add_argument("--join", type=int, default=1, help="sentences per utterance")
    ap.add_argument("--copies", type=int, default=1, help="copies of each train chapter")
    a = ap.parse_args()
    corpus = build_librispeech(a.root, a.join, a.copies)
    print({s: len(u) for s, u in corpus.utterances.items()})
