"""A full disk (or a file-size limit) while writing a checkpoint or a JSON state file: the
write fails with a clear OSError, the previous file is still there and loads to the same
step and weights, and no temp file is left behind. The other temp-file + rename writes
(model directory, tokenizer, feature cache) fail without leaving their temp behind.

The failures are real OS errors, not mocks: EFBIG from ``RLIMIT_FSIZE`` (in a subprocess,
with SIGXFSZ ignored so the write returns the error instead of killing the process) and,
where mounting is allowed, ENOSPC from a tiny tmpfs.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import tiny_model_config
from torch import nn

from kdprune.train.checkpoint import CKPT, load_checkpoint, save_checkpoint
from kdprune.utils import read_json, write_json

PY = sys.executable


def small_model() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Linear(8, 4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 8)).sum().backward()
    opt.step()  # optimiser state exists, as in a real checkpoint
    return model, opt


def good_checkpoint(ckpt_dir: Path) -> dict[str, torch.Tensor]:
    """Save a valid step-1 checkpoint and a JSON state file; return the saved weights."""
    model, opt = small_model()
    save_checkpoint(ckpt_dir, model, opt, {"step": 1})
    write_json(ckpt_dir / "state.json", {"step": 1})
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_previous_intact(ckpt_dir: Path, weights: dict[str, torch.Tensor]) -> None:
    fresh = nn.Linear(8, 4)
    state = load_checkpoint(ckpt_dir, fresh, torch.optim.AdamW(fresh.parameters()))
    assert state == {"step": 1}
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, weights[k]), k
    assert read_json(ckpt_dir / "state.json") == {"step": 1}
    assert sorted(os.listdir(ckpt_dir)) == [CKPT, "state.json"]  # no (hidden) temp files


# Runs in a child process: the file-size limit must not hit pytest's own files.
_OVER_LIMIT = textwrap.dedent(
    """
    import json, resource, signal, sys
    from pathlib import Path
    import torch
    from torch import nn
    from kdprune.train.checkpoint import save_checkpoint
    from kdprune.utils import write_json

    ckpt_dir, limit = Path(sys.argv[1]), int(sys.argv[2])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() returns EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    big = nn.Linear(512, 512)  # ~1 MB of weights, ~3 MB with AdamW state
    opt = torch.optim.AdamW(big.parameters())
    big(torch.randn(2, 512)).sum().backward()
    opt.step()
    out = {}
    try:
        save_checkpoint(ckpt_dir, big, opt, {"step": 2})
    except OSError as exc:
        out["checkpoint"] = [exc.errno, str(exc)]
    try:
        write_json(ckpt_dir / "state.json", {"step": 2, "pad": "x" * (2 * limit)})
    except OSError as exc:
        out["json"] = [exc.errno, str(exc)]
    print(json.dumps(out))
    """
)


def test_checkpoint_write_over_file_size_limit_keeps_previous(tmp_path):
    """EFBIG mid-write (RLIMIT_FSIZE): a clear error naming the checkpoint, the step-1
    checkpoint and state.json unchanged, no temp file left."""
    ckpt_dir = tmp_path / "ckpt"
    weights = good_checkpoint(ckpt_dir)
    limit = 256 * 1024  # the good checkpoint is a few KB; the new one needs ~3 MB
    assert (ckpt_dir / CKPT).stat().st_size < limit
    proc = subprocess.run(
        [PY, "-c", _OVER_LIMIT, str(ckpt_dir), str(limit)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    code, msg = out["checkpoint"]
    assert code == errno.EFBIG, msg
    assert f"could not write checkpoint {ckpt_dir / CKPT}" in msg
    assert "previous checkpoint is kept" in msg
    assert out["json"][0] == errno.EFBIG, out["json"]
    assert_previous_intact(ckpt_dir, weights)


@pytest.fixture()
def tiny_tmpfs(tmp_path):
    """A 512 KiB tmpfs (real ENOSPC); skipped where mounting is not permitted."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    try:
        res = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=512k,mode=0755", "tmpfs", str(mnt)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_checkpoint_write_on_full_disk_keeps_previous(tiny_tmpfs):
    """ENOSPC on a full tmpfs: the same guarantees, and the space of the failed temp file
    is given back (the next, smaller, save succeeds)."""
    ckpt_dir = tiny_tmpfs / "ckpt"
    weights = good_checkpoint(ckpt_dir)
    big = nn.Linear(512, 512)
    opt = torch.optim.AdamW(big.parameters())
    with pytest.raises(OSError) as info:
        save_checkpoint(ckpt_dir, big, opt, {"step": 2})
    assert info.value.errno == errno.ENOSPC
    assert f"could not write checkpoint {ckpt_dir / CKPT}" in str(info.value)
    with pytest.raises(OSError) as info:
        write_json(ckpt_dir / "state.json", {"step": 2, "pad": "x" * 2**20})
    assert info.value.errno == errno.ENOSPC
    assert_previous_intact(ckpt_dir, weights)
    model, opt = small_model()
    save_checkpoint(ckpt_dir, model, opt, {"step": 3})  # space was released
    assert load_checkpoint(ckpt_dir, nn.Linear(8, 4), None) == {"step": 3}


def fill(mnt: Path, leave: int) -> None:
    """Fill the file system at `mnt` until `leave` bytes are free."""
    st = os.statvfs(mnt)
    with open(mnt / "filler", "wb") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))


def test_other_atomic_writes_on_full_disk_leave_no_temp(tiny_tmpfs, tmp_path):
    """ENOSPC while writing a model directory, a tokenizer or the feature cache: each
    fails, the previous model directory still loads, and no temp file or folder is left."""
    import numpy as np
    from safetensors import SafetensorError

    from kdprune.data.audio import write_wav
    from kdprune.data.features import FeatureConfig, load_features
    from kdprune.data.tokenizer import train_tokenizer
    from kdprune.models.model_dir import load_model_dir, save_model_dir
    from kdprune.models.transducer import Transducer

    texts = ["turn on the kitchen lights", "set a timer for ten minutes", "play music"] * 20
    tok = train_tokenizer(texts, tmp_path / "tok" / "tokenizer.model", vocab_size=32)
    cfg = tiny_model_config(tok.vocab_size, micro=True)
    torch.manual_seed(0)
    old = Transducer(cfg)
    save_model_dir(tiny_tmpfs / "model", old, tok)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(2):
        write_wav(tmp_path / f"{i}.wav", 0.1 * rng.standard_normal(16000).astype(np.float32))
        lines.append(json.dumps({"audio_filepath": f"{i}.wav", "duration": 1.0, "text": "hi"}))
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    for d in ("tok", "features"):
        (tiny_tmpfs / d).mkdir()
    fill(tiny_tmpfs, leave=4096)

    with pytest.raises((SafetensorError, OSError)) as info:
        save_model_dir(tiny_tmpfs / "model", Transducer(cfg), tok)
    assert "No space left" in str(info.value), info.value
    with pytest.raises(OSError) as info:
        train_tokenizer(texts, tiny_tmpfs / "tok" / "tokenizer.model", vocab_size=32)
    assert info.value.errno == errno.ENOSPC
    with pytest.raises((OSError, RuntimeError)):  # features: 2 x 101 frames x 80 x fp16
        load_features(tmp_path / "m.jsonl", FeatureConfig(), tiny_tmpfs / "features")

    assert sorted(os.listdir(tiny_tmpfs)) == ["features", "filler", "model", "tok"]
    assert os.listdir(tiny_tmpfs / "tok") == [] and os.listdir(tiny_tmpfs / "features") == []
    loaded = load_model_dir(tiny_tmpfs / "model").model.state_dict()
    assert all(torch.equal(v, loaded[k]) for k, v in old.state_dict().items())
