"""The corpus a run uses, checked before anything starts, and its names.

`compress`, every sweep and the search benchmark use the preset's generated corpus or
three manifests the user gives (`kdprune.contract.manifest_selection`). `check_data` looks
at such a selection before any teacher, feature cache, MLflow run or Ray process exists,
so bad input costs one clear error and leaves nothing half-written:

- every manifest exists and holds utterances, and every audio file it lists can be read
  (`kdprune.data.manifest.read_manifest`; any sample rate: features resample to 16 kHz);
- one file given for two splits is allowed, with a warning (a smoke test may want it);
- the teacher's tokenizer encodes the transcripts: at most `MAX_UNKNOWN_RATE` of their
  sentencepiece tokens may be the unknown piece (a teacher trained on other text would
  be distilled into students that can never write these words).

It also names a selection: `data_digest`, a short hash of the three manifests' content
(the MLflow param ``data``: equal values, the same corpus), `data_key`, their content and
paths (part of every cache key: an edited or moved manifest is never reused), and
`data_paths`, the paths as the JSON of the MLflow tag ``kdprune.data_paths``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kdprune.contract import manifest_field
from kdprune.data.manifest import read_manifest
from kdprune.data.tokenizer import Tokenizer
from kdprune.utils import log

# More unknown tokens than this share of the transcripts' tokens: the teacher is refused.
MAX_UNKNOWN_RATE = 0.01


class DataError(ValueError):
    """The corpus cannot be used; the message names the flag, the file and the reason."""


@dataclass(frozen=True)
class ManifestSummary:
    """What the checks keep of a manifest that passed them."""

    utterances: int
    words: Counter  # word -> how often the transcripts say it


@dataclass(frozen=True)
class Coverage:
    """How well a tokenizer encodes a corpus's transcripts."""

    rate: float  # unknown tokens / all tokens
    unknown: int  # tokens that are the unknown piece
    total: int  # all tokens
    example: str  # the most frequent word with an unknown piece ("" when none)


# Manifests already checked by this process, by (path, size, mtime): the sweep CLI and
# `run_sweep` both check, and one LibriSpeech manifest lists 280k audio files.
_checked: dict[tuple[str, int, int], ManifestSummary] = {}


def _flag(split: str) -> str:
    return f"--{manifest_field(split).replace('_', '-')}"


def read_checked(split: str, path: str | Path) -> ManifestSummary:
    """A manifest's utterance count and words, after checking that it exists, parses,
    is not empty and that every audio file it lists reads; a DataError otherwise."""
    path = Path(path).resolve()
    if not path.is_file():
        raise DataError(f"{_flag(split)} {path}: no such file")
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _checked:
        try:
            utts = read_manifest(path, check_audio=True)
        except ValueError as exc:  # ManifestError: "<file>:<line>: <reason>"
            raise DataError(f"{_flag(split)}: {exc}") from None
        words = Counter(w for u in utts for w in u.text.split())
        _checked[key] = ManifestSummary(utterances=len(utts), words=words)
    return _checked[key]


def check_manifests(manifests: Mapping[str, str | Path]) -> dict[str, ManifestSummary]:
    """Each split's `read_checked` summary; warns when two splits are one file."""
    out = {split: read_checked(split, path) for split, path in manifests.items()}
    splits = list(manifests)
    for i, a in enumerate(splits):
        for b in splits[i + 1 :]:
            if os.path.samefile(manifests[a], manifests[b]):
                log(
                    f"warning: the {a} and {b} manifests are the same file "
                    f"({Path(manifests[a]).resolve()}): {b} results measure {a} data"
                )
    return out


def coverage(tokenizer: Tokenizer, words: Counter) -> Coverage:
    """The share of the tokens of ``words`` (word -> count) that ``tokenizer`` encodes as
    its unknown piece; each distinct word is encoded once."""
    unknown = total = 0
    example, example_count = "", 0
    unk = tokenizer.unk_id
    for word, count in words.items():
        ids = tokenizer.encode(word)
        bad = sum(i == unk for i in ids)
        unknown += bad * count
        total += len(ids) * count
        if bad and count > example_count:
            example, example_count = word, count
    return Coverage(
        rate=unknown / total if total else 0.0, unknown=unknown, total=total, example=example
    )


def check_coverage(
    teacher_dir: str | Path,
    manifests: Mapping[str, str | Path],
    max_rate: float = MAX_UNKNOWN_RATE,
) -> Coverage:
    """Refuse (DataError) a teacher whose tokenizer encodes more than ``max_rate`` of the
    transcripts' tokens as unknown, naming the rate and the most frequent such word."""
    from kdprune.models.model_dir import TOKENIZER  # (torch: only once a teacher is named)

    tok_file = Path(teacher_dir) / TOKENIZER
    if not tok_file.is_file():
        raise DataError(f"teacher {teacher_dir}: no {TOKENIZER} (not a model directory?)")
    words: Counter = Counter()
    for summary in check_manifests(manifests).values():
        words.update(summary.words)
    cov = coverage(Tokenizer(tok_file), words)
    if cov.rate > max_rate:
        raise DataError(
            f"the teacher's tokenizer ({tok_file}) cannot encode these transcripts: "
            f"{cov.rate:.2%} of their tokens are unknown pieces (at most {max_rate:.0%} "
            f"allowed), e.g. the word {cov.example!r}; give a teacher trained on this "
            "corpus's text, or leave out --teacher to train one on --train-manifest"
        )
    return cov


def check_data(
    manifests: Mapping[str, str | Path] | None, teacher_dir: str | Path | None = None
) -> None:
    """Every check of this module on the user's corpus (None: the preset's, generated by
    the project: nothing to check); the teacher's tokenizer when a teacher is named."""
    if not manifests:
        return
    check_manifests(manifests)
    if teacher_dir:
        check_coverage(teacher_dir, manifests)


def data_digest(manifests: Mapping[str, str | Path], length: int = 8) -> str:
    """Short hash of the three manifests' content, split by split (the param ``data``)."""
    h = hashlib.sha256()
    for split in sorted(manifests):
        h.update(f"{split}\0".encode())
        h.update(hashlib.sha256(Path(manifests[split]).read_bytes()).digest())
    return h.hexdigest()[:length]


def data_key(manifests: Mapping[str, str | Path]) -> str:
    """Content and absolute paths of the manifests (relative audio paths resolve against
    a manifest's folder): the part of a cache key that names the corpus."""
    paths = ",".join(f"{s}={Path(manifests[s]).resolve()}" for s in sorted(manifests))
    return f"{data_digest(manifests, 16)}:{hashlib.sha256(paths.encode()).hexdigest()[:16]}"


def data_paths(manifests: Mapping[str, str | Path]) -> str:
    """The manifests' absolute paths as JSON (the tag ``kdprune.data_paths``)."""
    return json.dumps({s: str(Path(p).resolve()) for s, p in manifests.items()})


def manifest_fields(manifests: Mapping[str, str | Path] | None) -> dict[str, str]:
    """A config's manifest fields for a selection (absolute paths; {} for None)."""
    return {manifest_field(s): str(Path(p).resolve()) for s, p in (manifests or {}).items()}
