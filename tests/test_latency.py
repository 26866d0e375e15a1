"""One latency protocol, recorded with its figure, and the node's latency lock.

- `model_latency` (what `kdprune evaluate`, metrics.json and every trial report) times
  by `PROTOCOL` whatever the caller's torch threads, and records threads, batch, audio
  seconds and repeats beside the figure; the caller's thread count is restored.
- The lock across real processes: a "trainer" process runs steps under
  `latency_lock.shared()` (as `fit`'s rank 0 does) and logs each step's start and end;
  no step runs while another process holds `exclusive()`, and the steps go on after it.
- A measurer killed while holding the lock does not block training (the kernel drops it).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch
from conftest import tiny_model

from kdprune.eval import latency_lock
from kdprune.eval.evaluate import features_for_manifest, model_latency
from kdprune.eval.latency import PROTOCOL

TRAINER = textwrap.dedent(
    """
    import sys, time
    from kdprune.eval import latency_lock
    out = open(sys.argv[1], "w", buffering=1)
    end = time.time() + float(sys.argv[2])
    while time.time() < end:
        with latency_lock.shared():
            t0 = time.time()
            x = 0
            while time.time() - t0 < 0.05:  # a 50 ms "step" of busy work
                x += 1
            out.write(f"{t0} {time.time()}\\n")
    """
)


def test_model_latency_follows_the_protocol_and_records_it(tiny_manifests):
    model = tiny_model()
    fs = features_for_manifest(tiny_manifests["test"], model)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        out = model_latency(model, fs, None, "cpu", max_utts=3)
        assert torch.get_num_threads() == 2  # restored
    finally:
        torch.set_num_threads(before)
    assert out["latency_threads"] == PROTOCOL.threads == 1
    assert out["latency_batch"] == 1
    assert out["latency_repeats"] == PROTOCOL.repeats
    durs = [u.duration for u in fs.utts[:: max(1, len(fs.utts) // 3)][:3]]
    assert abs(out["latency_audio_s"] - sum(durs)) < 1e-2
    assert out["latency_ms_per_audio_s"] > 0
    # one thread on the CPU: its CPU time, which other processes cannot add to, <= wall
    assert 0 < out["latency_cpu_ms_per_audio_s"] <= 1.05 * out["latency_ms_per_audio_s"]
    assert abs(out["rtf"] * 1000 - out["latency_ms_per_audio_s"]) < 1e-6


def _trainer(tmp_path: Path, seconds: float) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / "steps.txt"
    env = {"KDPRUNE_LOCK_DIR": str(tmp_path / "locks"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([sys.executable, "-c", TRAINER, str(log), str(seconds)], env=env)
    deadline = time.time() + 60
    while (not log.exists() or log.stat().st_size == 0) and time.time() < deadline:
        time.sleep(0.05)
    return proc, log


def _steps(log: Path) -> list[tuple[float, float]]:
    return [tuple(map(float, ln.split())) for ln in log.read_text().splitlines() if ln.strip()]


def test_exclusive_pauses_steps_of_another_process(tmp_path, monkeypatch):
    monkeypatch.setenv(latency_lock.LOCK_DIR_ENV, str(tmp_path / "locks"))
    proc, log = _trainer(tmp_path, 6.0)
    try:
        time.sleep(0.5)
        with latency_lock.exclusive():
            t_in = time.time()
            time.sleep(1.0)
            t_out = time.time()
        proc.wait(30)
    finally:
        proc.kill()
    steps = _steps(log)
    assert not [s for s in steps if s[0] < t_out and s[1] > t_in], "a step ran during it"
    assert any(s[1] <= t_in for s in steps) and any(s[0] >= t_out for s in steps)


def test_a_killed_measurer_releases_the_lock(tmp_path, monkeypatch):
    monkeypatch.setenv(latency_lock.LOCK_DIR_ENV, str(tmp_path / "locks"))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nfrom kdprune.eval import latency_lock\n"
            "with latency_lock.exclusive():\n    print('held', flush=True); time.sleep(600)",
        ],
        env={"KDPRUNE_LOCK_DIR": str(tmp_path / "locks"), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait(10)
    t0 = time.time()
    with latency_lock.shared():
        pass
    assert time.time() - t0 < 5
