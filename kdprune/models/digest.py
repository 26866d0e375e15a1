"""The content hash of a model directory: part of every cache key that a model feeds, so a
teacher changed, replaced or rebuilt since is never mistaken for the one a cached result
was made from (`kdprune.compress.run`), nor for the one a sweep started with
(`kdprune.orchestration.tuner`).

Every regular file at the directory's top level counts, by name and bytes (config.json,
the weights, the tokenizer; an imported Hugging Face directory's files alike). Reading the
weights once costs what loading the model costs; a process hashes each file once while its
size and modification time stay the same.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    """blake2b of a file's bytes, memoised by (path, size, mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _FILE_DIGESTS:
        with open(path, "rb") as f:
            _FILE_DIGESTS[key] = hashlib.file_digest(f, "blake2b").hexdigest()
    return _FILE_DIGESTS[key]


def model_dir_digest(model_dir: str | Path, length: int = 16) -> str:
    """Hash of a model directory's files (names and contents); `ModelDirError` (as
    `load_model_dir` raises it) when it is gone."""
    from kdprune.models.model_dir import ModelDirError

    root = Path(model_dir)
    if not root.is_dir():
        raise ModelDirError(f"model directory not found: {root}")
    h = hashlib.blake2b(digest_size=16)
    for f in sorted(p for p in root.iterdir() if p.is_file()):
        h.update(f"{f.name}\0{file_digest(f)}\0".encode())
    return h.hexdigest()[:length]
