"""Paths read from manifests never become paths written to (issue #7).

A manifest whose entries climb out of its folder with ``../..`` (to a folder under
/tmp), point to an absolute path elsewhere or carry odd names (shell syntax, quotes, a
leading dash, a newline), and a LibriSpeech tree whose utterance ids do the same, go
through the data path as users run it: `kdprune tokenizer`, the feature cache (computed,
then read back), `kdprune evaluate --output`, `kdprune data librispeech --out`. In a
child process, traced by ``strace -f`` where it can run (every file-system write of the
process tree, C libraries included), with HOME/TMPDIR/caches pointed to a scratch folder:

- every path created, opened for writing, renamed, linked or removed is under the work
  directory, the import's output folder or the scratch folder;
- the folders the audio, manifests and model were read from are unchanged (snapshot of
  every entry's size and mtime), no ``PWNED`` file appeared (nothing was run by a shell);
- output names come from hashes and fixed names (the feature cache is
  ``features/<manifest stem>-<hash>.pt``), never from an audio path.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import PY, clean_env, tiny_model_config

STRACE = "strace -f -qq -y -xx -s 65536 -e trace=%file".split()
# Calls that create, rename, link or remove a path (open/openat/openat2: when writing).
WRITE_CALLS = set(
    "creat mkdir mkdirat mknod mknodat rename renameat renameat2 link linkat symlink "
    "symlinkat unlink unlinkat rmdir truncate".split()
)
_CALL = re.compile(r"^\d+\s+(\w+)\((.*)$")
_TOKEN = re.compile(r'(?:AT_FDCWD|-?\d+)<((?:\\x[0-9a-f]{2})*)>|"((?:\\x[0-9a-f]{2})*)"')
ODD_NAMES = [
    "a b ü $(touch PWNED).wav",
    "-rf --no-preserve-root.wav",
    "q'\"`touch PWNED`.wav",
    "line\nbreak.wav",
    "..wav",
]
UP = "../" * 40  # more than enough to reach / from any folder

# The data path, run in the (traced) child; prints the exit codes as its last line.
_DATA_PATH = """
import json, sys
from pathlib import Path
from kdprune.cli import main
from kdprune.data.features import FeatureConfig, load_features

m, work, model, ls_root, ls_out = sys.argv[1:6]
codes = {}
codes["tokenizer"] = main(["tokenizer", "--preset", "tiny", "--workdir", work,
                           "--train-manifest", m, "--dev-manifest", m, "--test-manifest", m])
for _ in range(2):  # computed, then read back from the cache
    fs = load_features(Path(m), FeatureConfig(), Path(work) / "features")
codes["utterances"] = len(fs)
codes["evaluate"] = main(["evaluate", "--model", model, "--manifest", m,
                          "--output", str(Path(work) / "hyps.jsonl")])
codes["librispeech"] = main(["data", "librispeech", "--workdir", work, "--root", ls_root,
                             "--out", ls_out])
print(json.dumps(codes))
"""


def _hex(s: str) -> str:
    return bytes.fromhex(s.replace("\\x", "")).decode("utf-8", "surrogateescape")


def traced_writes(trace: Path, cwd: Path) -> list[tuple[str, str]]:
    """(syscall, absolute path) of every call that creates, opens for writing, renames,
    links or removes a path, from ``strace -f -y -xx`` output (all strings hex-escaped, so
    odd names parse exactly; ``-y`` gives the folder behind each directory fd)."""
    out = []
    for line in trace.read_text().splitlines():
        m = _CALL.match(line)
        if not m:  # "<... resumed>" halves, signals, exits
            continue
        name, rest = m.groups()
        args = rest.rsplit(") = ", 1)[0].split(" <unfinished", 1)[0]
        if name in ("open", "openat", "openat2"):
            if not re.search(r"O_WRONLY|O_RDWR|O_CREAT|O_TRUNC", args):
                continue
        elif name not in WRITE_CALLS:
            continue
        base, strings = str(cwd), 0
        for fd_dir, path in _TOKEN.findall(args):
            if fd_dir:
                base = _hex(fd_dir)
                continue
            strings += 1
            if name.startswith("symlink") and strings == 1:
                continue  # the link's target is its content, not a path written to
            out.append((name, os.path.normpath(os.path.join(base, _hex(path)))))
    return out


def strace_works() -> bool:
    if not shutil.which("strace"):
        return False
    res = subprocess.run(["strace", "-o", os.devnull, "true"], capture_output=True, timeout=30)
    return res.returncode == 0  # ptrace may be forbidden in a container


def snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    """path -> (size, mtime_ns) of every file and folder under the roots."""
    out = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for n in [dirpath, *(os.path.join(dirpath, x) for x in dirnames + filenames)]:
                st = os.lstat(n)
                out[n] = (st.st_size, st.st_mtime_ns)
    return out


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def write_audio(path: Path, rng: np.random.Generator) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    wave = 0.1 * rng.standard_normal(8000).astype(np.float32)
    sf.write(str(path), wave, 16000, format=path.suffix[1:].upper(), subtype="PCM_16")
    return path


@dataclass
class Hostile:
    """The inputs: where they live, and what the data path must leave untouched."""

    manifest: Path
    escape: Path  # a folder under /tmp, reached by ``../..``
    elsewhere: Path  # absolute paths outside the corpus
    audio: Path  # the corpus's audio folder (odd names)
    ls_root: Path
    model_dir: Path
    read_only: list[Path]


@pytest.fixture()
def escape_dir():
    """A folder directly under /tmp, which manifests reach by climbing out with ``../..``."""
    d = Path(tempfile.mkdtemp(prefix="kdsec-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture()
def hostile(tmp_path, escape_dir) -> Hostile:
    import torch

    from kdprune.data.tokenizer import train_tokenizer
    from kdprune.models.model_dir import save_model_dir
    from kdprune.models.transducer import Transducer

    rng = np.random.default_rng(0)
    escape = escape_dir
    corpus, elsewhere = tmp_path / "corpus", tmp_path / "elsewhere"
    entries = [
        UP + str(write_audio(escape / "xyz.wav", rng).relative_to("/")),
        str(write_audio(elsewhere / "abs.wav", rng)),
    ]
    for name in ODD_NAMES:
        write_audio(corpus / "audio" / name, rng)
        entries.append(f"../audio/{name}")
    texts = ["turn on the lights", "set a timer", "play some music", "stop", "go", "yes", "no"]
    manifest = corpus / "manifests" / "m.jsonl"
    manifest.parent.mkdir(parents=True)
    lines = [
        {"audio_filepath": a, "duration": 0.5, "text": t}
        for a, t in zip(entries, texts, strict=True)
    ]
    manifest.write_text("".join(json.dumps(x) + "\n" for x in lines))
    # A LibriSpeech tree whose utterance ids climb out or carry shell syntax.
    ls_root = tmp_path / "ls"
    chapter = ls_root / "LibriSpeech" / "dev-clean" / "1" / "2"
    odd_id = "1-2-$(touch${IFS}PWNED)`id`"  # utterance ids end at the first space
    for path in (escape / "evil.flac", chapter / f"{odd_id}.flac", chapter / "1-2-0000.flac"):
        write_audio(path, rng)
    evil_id = UP + str((escape / "evil").relative_to("/"))
    (chapter / "1-2.trans.txt").write_text(
        f"1-2-0000 HELLO WORLD\n{evil_id} TURN ON THE LIGHTS\n{odd_id} ODD NAME\n"
    )
    # A tiny random model directory for `kdprune evaluate`.
    tok = train_tokenizer(texts * 10, tmp_path / "tok" / "tokenizer.model", vocab_size=24)
    torch.manual_seed(0)
    model = Transducer(tiny_model_config(tok.vocab_size, micro=True))
    model_dir = save_model_dir(tmp_path / "model", model, tok)
    read_only = [corpus, elsewhere, escape, ls_root, model_dir, tmp_path / "tok"]
    return Hostile(manifest, escape, elsewhere, corpus / "audio", ls_root, model_dir, read_only)


def test_manifest_paths_never_become_write_paths(tmp_path, hostile):
    work, ls_out, scratch = tmp_path / "work", tmp_path / "ls-out", tmp_path / "scratch"
    scratch.mkdir()
    before = snapshot(*hostile.read_only)
    env = clean_env(
        tmp_path,
        HOME=str(scratch),  # caches of any library land in a folder the test can see
        TMPDIR=str(scratch),
        XDG_CACHE_HOME=str(scratch / ".cache"),
        MPLCONFIGDIR=str(scratch / ".mpl"),
        PYTHONDONTWRITEBYTECODE="1",
    )
    args = [hostile.manifest, work, hostile.model_dir, hostile.ls_root, ls_out]
    cmd = [PY, "-c", _DATA_PATH, *map(str, args)]
    trace = tmp_path / "strace.txt"
    traced = strace_works()
    if traced:
        cmd = [*STRACE, "-o", str(trace), *cmd]
    proc = subprocess.run(cmd, env=env, cwd=scratch, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    codes = json.loads(proc.stdout.strip().splitlines()[-1])
    assert codes == {"tokenizer": 0, "utterances": 7, "evaluate": 0, "librispeech": 0}, codes

    if traced:  # every write of the process tree, C libraries included
        allowed = [str(work), str(ls_out), str(scratch), "/dev", "/proc", "/sys"]
        writes = traced_writes(trace, scratch)
        assert any(p.startswith(str(work / "features")) for _, p in writes)  # parsed right
        outside = [
            (call, p)
            for call, p in writes
            if not any(p == a or p.startswith(a + os.sep) for a in allowed)
        ]
        assert not outside, outside[:20]
    # The folders audio, manifests and the model were read from are untouched.
    assert snapshot(*hostile.read_only) == before
    assert not list(tmp_path.rglob("PWNED")) and not list(hostile.escape.rglob("PWNED"))
    # Outputs are named by hashes and fixed names, never by audio paths.
    written = files_under(work) + files_under(ls_out) + files_under(scratch)
    for token in ("xyz", "abs", "evil", "PWNED", "rf", "break", "ü"):
        assert not [f for f in written if token in f], (token, written)
    feats = [f for f in files_under(work) if f.startswith("features")]
    assert feats and all(  # one cache folder: its index and shards, named by hashes
        re.fullmatch(r"features/m-[0-9a-f]+/(index\.npz|shard-[0-9]{5}\.f16)", f) for f in feats
    ), feats
    assert len({f.split("/")[1] for f in feats}) == 1, feats
    assert files_under(ls_out) == ["dev.jsonl"]
    # What was read outside is referenced (resolved) in the outputs, not written to.
    imported = [json.loads(x)["audio_filepath"] for x in (ls_out / "dev.jsonl").open()]
    assert str(hostile.escape / "evil.flac") in imported
    hyps = [json.loads(x)["audio_filepath"] for x in (work / "hyps.jsonl").open()]
    assert str(hostile.escape / "xyz.wav") in hyps and str(hostile.elsewhere / "abs.wav") in hyps
    assert str(hostile.audio / "line\nbreak.wav") in hyps
