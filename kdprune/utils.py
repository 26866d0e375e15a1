"""Small shared helpers: config (de)serialisation, content hashes, progress and results.

Every CLI command prints progress on stderr and its result as one JSON object on the last
stdout line (DESIGN §3); `emit_result` is the one place that does it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def to_dict(obj: Any) -> Any:
    """Dataclass (possibly nested, with tuples) -> plain JSON-able structure."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Inverse of `to_dict` for frozen dataclasses whose fields are plain values, tuples,
    or nested dataclasses (annotated by class, or as ``tuple[Cls, ...]``)."""
    import typing

    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {sorted(unknown)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(hints[name], value)
    return cls(**kwargs)


def _convert(tp: Any, value: Any) -> Any:
    import typing

    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if value is None:
        return None
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v) for v in value)
        return (
            tuple(_convert(a, v) for a, v in zip(args, value, strict=False))
            if args
            else tuple(value)
        )
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, value)
            except (TypeError, ValueError):
                continue
        return value
    return value


def config_hash(*parts: Any, length: int = 10) -> str:
    """Stable content hash of configs (dataclasses or JSON-able values)."""
    blob = json.dumps([to_dict(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


class EphemeralWorkdirError(ValueError):
    """The default work directory would live in a directory Ray deletes."""


def default_workdir() -> Path:
    """Work directory for caches and outputs: $KDPRUNE_WORKDIR or ./work (absolute).

    A job sent with `ray job submit --working-dir` runs in Ray's temporary package copy
    (``<ray temp>/session_*/runtime_resources/working_dir_files/...``), deleted with the
    Ray session: a ./work there would take the corpus, every trial's model and the MLflow
    store with it, so without $KDPRUNE_WORKDIR that case is refused with what to set."""
    env = os.environ.get("KDPRUNE_WORKDIR")
    path = Path(env or "work").resolve()
    if not env and "runtime_resources" in path.parts:
        raise EphemeralWorkdirError(
            f"this job runs in Ray's temporary package directory ({Path.cwd()}), deleted "
            "with the Ray session: set KDPRUNE_WORKDIR to a durable absolute path, e.g. "
            "`KDPRUNE_WORKDIR=$PWD/work ray start --head` (jobs inherit it), or "
            """`ray job submit --runtime-env-json '{"env_vars": {"KDPRUNE_WORKDIR": "/abs/work"}}'`"""
        )
    return path


def log(msg: str) -> None:
    """Progress message on stderr (stdout is reserved for the final JSON line).

    Written to the stream, not through `print`: inside a Ray Train worker `print` is
    patched to also hand each line to the root logger, whose console handler writes it to
    stderr a second time."""
    sys.stderr.write(f"[kdprune {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


def emit_result(result: dict[str, Any]) -> None:
    """Print the command's result as one JSON object on the last stdout line."""
    sys.stdout.flush()
    print(json.dumps(to_dict(result), sort_keys=True), flush=True)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file via temp file + rename so readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        # mkstemp makes the file 0600; give it the mode a plain open() would (0666 & ~umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(to_dict(data), indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> Any:
    with open(path) as f:
        return json.load(f)
