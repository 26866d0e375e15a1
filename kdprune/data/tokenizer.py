"""Sentencepiece tokenizer trained on the train transcripts. Blank is id `vocab_size`."""

from __future__ import annotations

import io
from pathlib import Path

import sentencepiece as spm


class Tokenizer:
    """Thin wrapper over a sentencepiece model file."""

    def __init__(self, model_file: Path) -> None:
        self.model_file = Path(model_file)
        if not self.model_file.exists():
            raise FileNotFoundError(f"tokenizer model not found: {self.model_file}")
        self.sp = spm.SentencePieceProcessor(model_file=str(self.model_file))

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    @property
    def unk_id(self) -> int:
        """The unknown piece: what a character the model never saw encodes to."""
        return self.sp.unk_id()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text, out_type=int)

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode([i for i in ids if 0 <= i < self.vocab_size])


def train_tokenizer(
    texts: list[str], out_file: Path, vocab_size: int, model_type: str = "unigram"
) -> Tokenizer:
    """Train sentencepiece on `texts` and write the model to `out_file` (atomic)."""
    if model_type not in ("unigram", "bpe"):
        raise ValueError(f"model_type must be 'unigram' or 'bpe', got {model_type!r}")
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=buf,
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=1.0,
        # No <s>/</s>/<unk> pieces competing with real ones; unk must exist (id 0).
        bos_id=-1,
        eos_id=-1,
        unk_id=0,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
    )
    tmp = out_file.with_suffix(".tmp")
    try:
        tmp.write_bytes(buf.getvalue())
        tmp.replace(out_file)
    finally:  # a failed write (full disk) leaves no partial temp file behind
        tmp.unlink(missing_ok=True)
    return Tokenizer(out_file)
