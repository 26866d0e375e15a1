"""The data path whose memory does not grow with the corpus: the sharded feature cache
(built once, atomically, identical to direct log-mel), streamed statistics, and the
DataLoader batch stream (rank shards disjoint and equal in count, resume exact)."""

import json

import numpy as np
import pytest
import torch

from kdprune.data import feature_cache, features
from kdprune.data.audio import load_audio, write_wav
from kdprune.data.batching import bucket_batches, planned_batches
from kdprune.data.feature_cache import build_cache, open_cache
from kdprune.data.features import FeatureConfig, FeatureSet, global_stats, load_features, log_mel
from kdprune.data.loader import training_batches


@pytest.fixture
def noise_manifest(tmp_path):
    """7 utterances of 0.3-0.9 s of noise (lengths differ, so batches are bucketed)."""
    rng = np.random.default_rng(0)
    lines = []
    for i in range(7):
        n = 4800 + 1600 * i
        write_wav(tmp_path / f"{i}.wav", 0.1 * rng.standard_normal(n).astype(np.float32))
        lines.append(
            json.dumps({"audio_filepath": f"{i}.wav", "duration": n / 16000, "text": "hi"})
        )
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cached_features_equal_direct_log_mel(tiny_manifests, tmp_path):
    fs = load_features(tiny_manifests["dev"], FeatureConfig(), tmp_path / "features")
    assert len(fs) == len(fs.utts) > 0
    for i in range(len(fs)):
        direct = log_mel(torch.from_numpy(load_audio(fs.utts[i].audio_filepath)), FeatureConfig())
        assert torch.equal(fs[i], direct.half())
        assert fs.num_frames[i] == direct.shape[0]


def test_global_stats_equal_the_in_memory_computation(tiny_manifests, tmp_path):
    fs = load_features(tiny_manifests["dev"], FeatureConfig(), tmp_path / "features")
    feats = torch.cat([fs[i].double() for i in range(len(fs))])  # all frames at once
    mean = feats.mean(0)
    std = ((feats * feats).mean(0) - mean * mean).clamp(min=1e-8).sqrt()
    got_mean, got_std = global_stats(fs)
    assert torch.allclose(got_mean, mean.float(), atol=1e-5)
    assert torch.allclose(got_std, std.float(), atol=1e-5)


def test_cache_is_built_once_and_reused(noise_manifest, tmp_path, monkeypatch):
    fs = load_features(noise_manifest, FeatureConfig(), tmp_path / "features", workers=1)
    (cache,) = (tmp_path / "features").iterdir()
    stamp = (cache / "index.npz").stat().st_mtime_ns

    def fail(*a, **k):
        raise AssertionError("features computed again")

    monkeypatch.setattr(features, "cached_log_mel", fail)
    again = load_features(noise_manifest, FeatureConfig(), tmp_path / "features", workers=1)
    assert (cache / "index.npz").stat().st_mtime_ns == stamp
    assert all(torch.equal(fs[i], again[i]) for i in range(len(fs)))
    monkeypatch.undo()  # another front end is another cache
    load_features(noise_manifest, FeatureConfig(n_mels=40), tmp_path / "features", workers=1)
    assert len(list((tmp_path / "features").iterdir())) == 2


def test_interrupted_build_leaves_nothing_behind(noise_manifest, tmp_path, monkeypatch):
    calls = []
    real = features.cached_log_mel

    def dies_on_the_fourth(utt, cfg):
        calls.append(utt)
        if len(calls) == 4:
            raise KeyboardInterrupt  # as a Ctrl-C in the middle of the second shard
        return real(utt, cfg)

    monkeypatch.setattr(features, "cached_log_mel", dies_on_the_fourth)
    monkeypatch.setattr(feature_cache, "SHARD_UTTS", 3)
    root = tmp_path / "features"
    with pytest.raises(KeyboardInterrupt):
        load_features(noise_manifest, FeatureConfig(), root, workers=1)
    assert list(root.iterdir()) == []  # no cache, no temporary folder
    monkeypatch.setattr(features, "cached_log_mel", real)
    assert len(load_features(noise_manifest, FeatureConfig(), root, workers=1)) == 7


def _extract(item: int) -> torch.Tensor:
    return torch.full((3 + item, 2), float(item))


def test_parallel_build_and_racing_builders_agree(tmp_path):
    items = list(range(9))
    build_cache(tmp_path / "one", items, _extract, workers=1, shard_items=2)
    build_cache(tmp_path / "two", items, _extract, workers=2, shard_items=2)
    one, two = (
        open_cache(tmp_path / "one", items, _extract),
        open_cache(tmp_path / "two", items, _extract),
    )
    for i in items:
        assert torch.equal(one(i), _extract(i).half()) and torch.equal(two(i), one(i))
    build_cache(tmp_path / "one", items, _extract)  # lost the race: the first cache stays
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]
    assert torch.equal(open_cache(tmp_path / "one", items, _extract)(8), _extract(8).half())


@pytest.mark.parametrize("world", [2, 3])
def test_rank_shards_are_disjoint_and_equal_in_count(world):
    lengths = [int(x) for x in np.random.default_rng(1).integers(50, 400, size=101)]
    for epoch in range(3):
        shards = [bucket_batches(lengths, 1200, 8, 0, epoch, True, r, world) for r in range(world)]
        assert len({len(s) for s in shards}) == 1 and len(shards[0]) > 0
        seen = [i for s in shards for b in s for i in b]
        assert len(seen) == len(set(seen))  # no utterance on two ranks
        everything = bucket_batches(lengths, 1200, 8, 0, epoch)
        assert {tuple(b) for s in shards for b in s} <= {tuple(b) for b in everything}


def _toy_set(n: int = 10) -> FeatureSet:
    from kdprune.data.manifest import Utterance

    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(5 + 3 * i, 2, generator=g) for i in range(n)]
    utts = [Utterance(audio_filepath=__file__, duration=1.0, text="x") for _ in range(n)]  # type: ignore[arg-type]
    return FeatureSet(utts, [f.shape[0] for f in feats], feats.__getitem__)


def test_resumed_stream_sees_the_unbroken_runs_batches():
    fs = _toy_set()
    kw = {"max_frames": 60, "max_batch": 4, "seed": 3, "world_size": 2, "rank": 1}

    def take(n: int, start: int, workers: int) -> list:
        it = training_batches(fs, None, start_step=start, workers=workers, **kw)
        return [next(it) for _ in range(n)]

    unbroken = take(12, 0, workers=1)  # several epochs, through a worker process
    resumed = take(5, 7, workers=1)
    in_trainer = take(12, 0, workers=0)
    for a, b in zip(unbroken[7:], resumed, strict=True):
        assert a.indices == b.indices and torch.equal(a.feats, b.feats)
    assert [b.indices for b in unbroken] == [b.indices for b in in_trainer]
    plan = planned_batches(fs.num_frames, 60, 4, 3, 0, 1, 2)
    assert [next(plan) for _ in range(12)] == [b.indices for b in unbroken]
