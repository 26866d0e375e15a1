"""Latency: wall-clock per second of audio at batch 1, with warm-up and fixed threads."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Latency:
    ms_per_audio_s: float  # mean wall-clock milliseconds per second of audio
    rtf: float  # real-time factor = processing time / audio duration
    device: str
    threads: int
    runs: int


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def measure_latency(
    run_one: Callable[[int], None],
    durations_s: list[float],
    device: torch.device | str,
    warmup: int = 2,
    threads: int | None = None,
) -> Latency:
    """Time `run_one(i)` for each utterance i (batch 1) under inference mode.

    The first `warmup` calls are untimed (allocator, kernels, caches); CUDA is synchronised
    around each timed call so queued kernels are counted.
    """
    prev_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            for i in range(min(warmup, len(durations_s))):
                run_one(i)
            sync(device)
            total = 0.0
            for i in range(len(durations_s)):
                t0 = time.perf_counter()
                run_one(i)
                sync(device)
                total += time.perf_counter() - t0
        audio = sum(durations_s)
        return Latency(
            1000 * total / audio,
            total / audio,
            str(device),
            torch.get_num_threads(),
            len(durations_s),
        )
    finally:
        torch.set_num_threads(prev_threads)
