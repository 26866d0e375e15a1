"""Decoding an exported transducer with onnxruntime (no torch model needed).

`OnnxTransducer` opens an export directory (`kdprune export --format onnx`): its three or
four graphs, `tokens.txt` and `metadata.json`. `GreedySearch` is the batched greedy RNN-T
search of `kdprune.eval.decode.greedy_decode` on those graphs, fed encoder frames as they
come (all at once, or chunk by chunk). `chunk_windows` cuts an utterance's feature frames
into the streaming encoder's windows, so a chunk's outputs are the ones the cached PyTorch
`StreamingEncoder` produces for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kdprune.utils import read_json

METADATA = "metadata.json"
TOKENS = "tokens.txt"
SPACE = "\u2581"  # sentencepiece's word-boundary mark
UNK, UNK_TEXT = "<unk>", " \u2047 "  # the unknown piece and how sentencepiece prints it


def require(name: str):
    """Import `name` ("onnx", "onnxruntime"), or one clear error naming the extra."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise RuntimeError(
            f"ONNX export and decoding need {name}: pip install -e '.[onnx]' "
            "(scripts/setup.sh --test installs it)"
        ) from e


def read_tokens(path: Path) -> list[str]:
    """tokens.txt: one "piece id" a line, ids 0..V (the blank last) -> pieces by id."""
    table: dict[int, str] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        piece, idx = line.rsplit(" ", 1)
        table[int(idx)] = piece
    return [table[i] for i in range(len(table))]


def chunk_windows(n_frames: int, stream: dict[str, Any]) -> list[tuple[int, int]]:
    """Feature-frame windows [start, end) of the streaming encoder's calls for an utterance
    of `n_frames` frames: whole chunks `shift_frames` apart, then one partial chunk with the
    output frames left (none when the utterance is shorter than one receptive field)."""
    stride, rf, c = stream["subsampling"], stream["receptive_field"], stream["chunk_size"]
    n_out = (n_frames - rf) // stride + 1 if n_frames >= rf else 0
    return [(stride * k, stride * (min(k + c, n_out) - 1) + rf) for k in range(0, n_out, c)]


class OnnxTransducer:
    """The sessions of an export directory; `threads` intra-op threads per session (None:
    onnxruntime's default), one inter-op thread, CPU."""

    def __init__(self, export_dir: Path, threads: int | None = None) -> None:
        ort = require("onnxruntime")
        self.dir = Path(export_dir)
        if not (self.dir / METADATA).exists():
            raise FileNotFoundError(
                f"{self.dir}: no {METADATA} (not an ONNX export; run kdprune export --format onnx)"
            )
        self.meta = read_json(self.dir / METADATA)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or 0
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.threads = threads

        def session(name: str):
            return ort.InferenceSession(
                str(self.dir / name), opts, providers=["CPUExecutionProvider"]
            )

        files = self.meta["files"]
        self.encoder = session(files["encoder"])
        self.decoder = session(files["decoder"])
        self.joiner = session(files["joiner"])
        self.stream = self.meta.get("streaming")
        self.streaming_encoder = session(self.stream["file"]) if self.stream else None
        self.tokens = read_tokens(self.dir / files["tokens"])
        self.blank = int(self.meta["blank_id"])

    def encode(self, x: np.ndarray, x_lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x (B, T, F) float32 raw log-mel, x_lens (B,) -> (B, T', J), lengths (B,)."""
        out, lens = self.encoder.run(
            None, {"x": x.astype(np.float32), "x_lens": x_lens.astype(np.int64)}
        )
        return out, lens

    def initial_stream_state(self, batch: int = 1) -> list[np.ndarray]:
        """processed (B,) and every cache of the streaming encoder, zeros."""
        if self.stream is None:
            raise ValueError(f"{self.dir} has no streaming encoder (the model is not streaming)")
        state = [np.zeros(batch, dtype=np.int64)]
        state += [np.zeros((batch, *s["shape"]), np.float32) for s in self.stream["states"]]
        return state

    def encode_chunk(
        self, x: np.ndarray, state: list[np.ndarray]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """One streaming window x (B, T_in, F) -> (B, C', J) and the next state."""
        names = ["processed"] + [s["name"] for s in self.stream["states"]]
        feeds = {"x": x.astype(np.float32), **dict(zip(names, state, strict=True))}
        out, *new_state = self.streaming_encoder.run(None, feeds)
        return out, new_state

    def stream_chunks(self, feats: np.ndarray) -> Iterator[np.ndarray]:
        """feats (1, N, F) raw log-mel of one utterance -> encoder frames (1, C', J), one
        array per chunk, as a runtime would produce them while the audio arrives."""
        state = self.initial_stream_state(feats.shape[0])
        for start, end in chunk_windows(feats.shape[1], self.stream):
            out, state = self.encode_chunk(feats[:, start:end], state)
            yield out

    def text(self, ids: list[int]) -> str:
        """Token ids -> text, as sentencepiece decodes: pieces joined, leading word marks
        dropped, the others spaces, the unknown piece " ⁇ "."""
        kept = [i for i in ids if i != self.blank]
        text = "".join(UNK_TEXT if self.tokens[i] == UNK else self.tokens[i] for i in kept)
        return text.lstrip(SPACE).replace(SPACE, " ")


class GreedySearch:
    """Greedy RNN-T search over a batch of B streams, at most `max_symbols` emissions per
    encoder frame: the search of `kdprune.eval.decode.greedy_decode`, one joiner call per
    step and one decoder call when any stream emits."""

    def __init__(self, model: OnnxTransducer, batch: int, max_symbols: int = 10) -> None:
        self.m, self.max_symbols = model, max_symbols
        d = model.meta["decoder"]
        shape = (d["num_layers"], batch, d["hidden"])
        self.h, self.c = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
        y = np.full((batch, 1), model.blank, dtype=np.int64)
        self.dec_out, self.h, self.c = self._decoder(y, self.h, self.c)
        self.hyps: list[list[int]] = [[] for _ in range(batch)]

    def _decoder(self, y, h, c) -> list[np.ndarray]:
        return self.m.decoder.run(None, {"y": y, "h": h, "c": c})

    def feed(self, enc: np.ndarray, lens: np.ndarray | None = None) -> list[list[int]]:
        """enc (B, T, J) projected encoder frames (valid up to `lens`, None: all) -> the
        hypotheses so far."""
        b, t, _ = enc.shape
        lens = np.full(b, t) if lens is None else lens
        for ti in range(t):
            active = lens > ti
            for _ in range(self.max_symbols):
                (logit,) = self.m.joiner.run(
                    None, {"encoder_out": enc[:, ti], "decoder_out": self.dec_out}
                )
                best = logit.argmax(-1)
                emit = active & (best != self.m.blank)
                if not emit.any():
                    break
                out, h, c = self._decoder(best[:, None].astype(np.int64), self.h, self.c)
                self.dec_out = np.where(emit[:, None], out, self.dec_out)
                self.h = np.where(emit[None, :, None], h, self.h)
                self.c = np.where(emit[None, :, None], c, self.c)
                for i in np.flatnonzero(emit):
                    self.hyps[i].append(int(best[i]))
        return self.hyps
