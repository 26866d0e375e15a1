"""Training batches through a `torch.utils.data.DataLoader`: worker processes read and
pad each planned batch while the trainer computes, pinned and prefetched on CUDA.

The plan (which utterances form each batch, `kdprune.data.batching.planned_batches`) is
made in the trainer process from frame counts alone; workers only turn an index list into
a `Batch`. Batches therefore do not depend on the number of workers, and a resumed run
sees the same batches as an unbroken one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from kdprune.data.batching import Batch, collate, planned_batches
from kdprune.data.features import FeatureSet
from kdprune.data.tokenizer import Tokenizer


class BatchDataset(Dataset):
    """Map-style: a list of utterance indices -> the padded `Batch` of those utterances."""

    def __init__(self, fs: FeatureSet, tokenizer: Tokenizer | None):
        self.fs, self.tokenizer = fs, tokenizer

    def __len__(self) -> int:
        return len(self.fs)

    def __getitem__(self, indices: list[int]) -> Batch:
        return collate(self.fs, indices, self.tokenizer)


def default_workers(device: torch.device | str) -> int:
    """One worker on CPU (the trainer needs the cores); on CUDA up to 4, leaving a core to
    the trainer."""
    if torch.device(device).type != "cuda":
        return 1
    return max(1, min(4, len(os.sched_getaffinity(0)) - 1))


def training_batches(
    fs: FeatureSet,
    tokenizer: Tokenizer | None,
    *,
    max_frames: int,
    max_batch: int,
    seed: int,
    start_step: int,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | str = "cpu",
    workers: int | None = None,
) -> Iterator[Batch]:
    """This rank's training batches from step `start_step` on, endlessly, on `device`.

    `workers`: DataLoader worker processes (None: `default_workers`; 0: read in the
    trainer). Each worker keeps 2 batches in flight; on CUDA they are pinned and copied
    without blocking.
    """
    workers = default_workers(device) if workers is None else workers
    cuda = torch.device(device).type == "cuda"
    plan = planned_batches(fs.num_frames, max_frames, max_batch, seed, start_step, rank, world_size)
    loader = DataLoader(
        BatchDataset(fs, tokenizer),
        batch_size=None,  # the plan's elements are whole batches
        sampler=plan,
        num_workers=workers,
        pin_memory=cuda,
        prefetch_factor=2 if workers else None,
    )
    for batch in loader:
        yield batch.to(device, non_blocking=cuda)
