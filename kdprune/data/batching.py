"""Length-bucketed batch plans (from frame counts only, no audio read), rank sharding for
DDP, and padding collation.

Hand-written rather than Lhotse's `DynamicBucketingSampler`: these plans bound the
*padded* frames of a batch (what memory scales with), are a pure function of
(seed, epoch, rank), so a resumed run skips plans without reading data, and give the
batches the shipped models were trained with.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from kdprune.data.features import FeatureSet
from kdprune.data.tokenizer import Tokenizer


@dataclass
class Batch:
    feats: torch.Tensor  # (B, T, F) float32 log-mel, not yet normalised
    feat_lens: torch.Tensor  # (B,) int64
    targets: torch.Tensor  # (B, U) int64 token ids, padded with 0
    target_lens: torch.Tensor  # (B,) int64
    texts: list[str]
    indices: list[int]  # positions in the FeatureSet

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, non_blocking=non_blocking)

        return Batch(
            move(self.feats),
            move(self.feat_lens),
            move(self.targets),
            move(self.target_lens),
            self.texts,
            self.indices,
        )

    def pin_memory(self) -> Batch:
        """Page-locked copies (the DataLoader's pin-memory thread calls this on CUDA)."""
        return Batch(
            self.feats.pin_memory(),
            self.feat_lens.pin_memory(),
            self.targets.pin_memory(),
            self.target_lens.pin_memory(),
            self.texts,
            self.indices,
        )


def bucket_batches(
    lengths: list[int],
    max_frames: int,
    max_batch: int,
    seed: int,
    epoch: int,
    shuffle: bool = True,
    rank: int = 0,
    world_size: int = 1,
) -> list[list[int]]:
    """Group indices of similar length into batches of at most `max_frames` padded frames.

    Sorting by length (with a seeded jitter) keeps padding small; batches are shuffled per
    epoch and dealt round-robin to ranks, truncated so every rank gets the same count (DDP
    needs equal step counts).
    """
    rng = random.Random(seed * 100003 + epoch)
    order = sorted(
        range(len(lengths)),
        key=lambda i: lengths[i] * (1 + 0.1 * rng.random()) if shuffle else lengths[i],
    )
    batches: list[list[int]] = []
    cur: list[int] = []
    cur_max = 0
    for i in order:
        m = max(cur_max, lengths[i])
        if cur and (m * (len(cur) + 1) > max_frames or len(cur) >= max_batch):
            batches.append(cur)
            cur, m = [], lengths[i]
        cur.append(i)
        cur_max = m
    if cur:
        batches.append(cur)
    if shuffle:
        rng.shuffle(batches)
    if world_size > 1:
        n = len(batches) // world_size * world_size
        batches = batches[rank:n:world_size]
    return batches


def planned_batches(
    lengths: list[int],
    max_frames: int,
    max_batch: int,
    seed: int,
    start_step: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[list[int]]:
    """This rank's `bucket_batches` of epoch 0, 1, 2, ... endlessly, from step `start_step`
    on: the same batches at every step whether or not the run was interrupted before it."""
    epoch, step = 0, 0
    while True:
        plan = bucket_batches(lengths, max_frames, max_batch, seed, epoch, True, rank, world_size)
        if not plan:
            raise ValueError(f"no batch for rank {rank} of {world_size}: too few utterances")
        for idx in plan:
            if step >= start_step:
                yield idx
            step += 1
        epoch += 1


def collate(fs: FeatureSet, indices: list[int], tokenizer: Tokenizer | None) -> Batch:
    """Read and pad features and token ids; without a tokenizer (SSL pre-training) targets
    are empty."""
    feats = [fs[i].float() for i in indices]
    texts = [fs.utts[i].text for i in indices]
    toks = [tokenizer.encode(t) if tokenizer is not None else [] for t in texts]
    feat_lens = torch.tensor([f.shape[0] for f in feats])
    target_lens = torch.tensor([len(t) for t in toks])
    x = torch.zeros(len(feats), int(feat_lens.max()), feats[0].shape[1])
    y = torch.zeros(len(toks), max(1, int(target_lens.max())), dtype=torch.long)
    for j, (f, t) in enumerate(zip(feats, toks, strict=True)):
        x[j, : f.shape[0]] = f
        y[j, : len(t)] = torch.tensor(t, dtype=torch.long)
    return Batch(x, feat_lens, y, target_lens, texts, list(indices))
