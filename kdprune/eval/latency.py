"""Latency: wall-clock per second of audio, by one protocol everywhere (`LatencyProtocol`).

`kdprune evaluate`, a fine-tuned teacher's and a compressed student's ``metrics.json``
and every sweep trial time the same way, and record the protocol with the figure
(``latency_threads``, ``latency_batch``, ``latency_audio_s``, ``latency_repeats``): batch
1, a fixed number of torch threads, warm-up calls, ``repeats`` timed passes over the
utterances with each one's best time kept (the noise of a shared machine only ever adds
time, and a burst of it spoils one pass, not every run of an utterance), all under the
node's exclusive latency lock (`kdprune.eval.latency_lock`), which pauses the training
steps of the other trials on the node at their next step boundary.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from kdprune.eval import latency_lock


@dataclass(frozen=True)
class LatencyProtocol:
    """How a latency figure is taken (recorded beside it)."""

    threads: int = 1  # torch intra-op threads while timing (a sweep trial's one core)
    utterances: int = 20  # test utterances timed, spread over the set, batch 1
    warmup: int = 2  # untimed calls first (allocator, kernels, caches)
    repeats: int = 5  # timed passes over the utterances; each one's best run counts
    exclusive: bool = True  # hold the node's latency lock (pauses other trials' steps)


PROTOCOL = LatencyProtocol()


@dataclass
class Latency:
    ms_per_audio_s: float  # wall-clock milliseconds per second of audio (best of repeats)
    rtf: float  # real-time factor = processing time / audio duration
    device: str
    threads: int
    runs: int  # utterances timed
    audio_s: float = 0.0  # seconds of audio timed (once)
    repeats: int = 1
    # CPU time of the timing thread per second of audio (best pass of each utterance), on
    # the CPU at 1 thread: what a busy machine's other processes cannot add to (0 else)
    cpu_ms_per_audio_s: float = 0.0


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def measure_latency(
    run_one: Callable[[int], None],
    durations_s: list[float],
    device: torch.device | str,
    warmup: int = 2,
    threads: int | None = None,
    repeats: int = 1,
    exclusive: bool = False,
) -> Latency:
    """Time `run_one(i)` for each utterance i (batch 1) under inference mode: ``repeats``
    passes over the utterances, the best pass of each, summed over the utterances.

    The first `warmup` calls are untimed; CUDA is synchronised around each timed call so
    queued kernels are counted. ``exclusive``: under the node's latency lock.
    """
    prev_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    lock = latency_lock.exclusive() if exclusive else nullcontext()
    try:
        with lock, torch.inference_mode():
            for i in range(min(warmup, len(durations_s))):
                run_one(i)
            sync(device)
            # passes over the set, each utterance's best pass kept: a burst of load on the
            # machine spoils one pass of an utterance, not all its runs back to back
            best = [float("inf")] * len(durations_s)
            best_cpu = list(best)
            for _ in range(max(1, repeats)):
                for i in range(len(durations_s)):
                    c0, t0 = time.thread_time(), time.perf_counter()
                    run_one(i)
                    sync(device)
                    best[i] = min(best[i], time.perf_counter() - t0)
                    best_cpu[i] = min(best_cpu[i], time.thread_time() - c0)
            total = sum(best)
        one_cpu_thread = torch.device(device).type == "cpu" and torch.get_num_threads() == 1
        audio = sum(durations_s)
        return Latency(
            1000 * total / audio,
            total / audio,
            str(device),
            torch.get_num_threads(),
            len(durations_s),
            audio,
            max(1, repeats),
            1000 * sum(best_cpu) / audio if one_cpu_thread else 0.0,
        )
    finally:
        torch.set_num_threads(prev_threads)
