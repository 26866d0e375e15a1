"""Sweep configuration and the define-by-run search space, sampled by a real Optuna study."""

from __future__ import annotations

import optuna
import pytest

from kdprune.orchestration.config import (
    SpaceConfig,
    SweepConfig,
    max_concurrent_trials,
    parse_objectives,
    redact,
)
from kdprune.orchestration.space import SearchSpace, compress_dict, logged_params

optuna.logging.set_verbosity(optuna.logging.WARNING)


def sample(space: SearchSpace, n: int, seed: int = 0) -> list[dict]:
    """n configs as OptunaSearch builds them: suggested params + the returned constants."""
    study = optuna.create_study(
        directions=["minimize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=seed)
    )
    out = []
    for _ in range(n):
        trial = study.ask()
        const = space(trial)
        out.append({**trial.params, **const})
        study.tell(trial, [0.0, 0.0])
    return out


def test_method_opens_its_own_knob_and_kd_includes_zero():
    configs = sample(SearchSpace(SpaceConfig(), preset="tiny", seed=3, steps=7), 60)
    assert {c["method"] for c in configs} == {"l0", "lrf"}
    for c in configs:
        if c["method"] == "l0":
            assert 0.2 <= c["target_sparsity"] <= 0.8 and "rank_ratio" not in c
        else:
            assert 0.1 <= c["rank_ratio"] <= 0.8 and "target_sparsity" not in c
        assert c["preset"] == "tiny" and c["seed"] == 3 and c["steps"] == 7
        assert c["schedule"] == "joint" and c["streaming"] is False
    assert 0.0 in {c["kd_weight"] for c in configs}


def test_streaming_and_schedule_searched_only_when_listed():
    space = SpaceConfig(
        methods=("l0", "lrf", "none"),
        schedules=("joint", "sequential"),
        streaming=(False, True),
        chunk_sizes=(4, 16),
    )
    configs = sample(SearchSpace(space, preset="demo"), 80, seed=1)
    assert {c["schedule"] for c in configs} == {"joint", "sequential"}
    assert {c["streaming"] for c in configs} == {False, True}
    for c in configs:
        if c["streaming"] and "chunk_size" in c:
            assert c["chunk_size"] in (4, 16)
        if c["method"] == "none":
            assert "target_sparsity" not in c and "rank_ratio" not in c
    assert {c["chunk_size"] for c in configs if c["streaming"]} == {4, 16}


def test_trial_config_becomes_a_valid_compress_config():
    from kdprune.compress import CompressConfig, check_compress_config
    from kdprune.utils import from_dict

    for c in sample(SearchSpace(SpaceConfig(), preset="tiny"), 10):
        cfg = from_dict(CompressConfig, compress_dict({**c, "unrelated": 1}))
        check_compress_config(cfg)
        assert cfg.method == c["method"]


def test_logged_params_hide_the_other_methods_knob():
    p = logged_params({"method": "l0", "target_sparsity": 0.4, "rank_ratio": 0.5, "kd_weight": 0})
    assert p["target_sparsity"] == 0.4 and p["rank_ratio"] is None
    p = logged_params({"method": "lrf", "target_sparsity": 0.4, "rank_ratio": 0.3})
    assert p["rank_ratio"] == 0.3 and p["target_sparsity"] is None
    assert set(p) >= {"method", "kd_weight", "target_sparsity", "rank_ratio", "schedule"}
    assert set(p) >= {"streaming", "seed", "preset"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"target_sparsity": (0.5, 1.0)}, "target_sparsity"),
        ({"rank_ratio": (0.0, 0.5)}, "rank_ratio"),
        ({"kd_weights": (-1.0,)}, "kd_weights"),
        ({"methods": ("pruneit",)}, "methods"),
        ({"schedules": ("parallel",)}, "schedules"),
        ({"chunk_sizes": (0,)}, "chunk_sizes"),
    ],
)
def test_space_out_of_range_names_the_field(change, field):
    with pytest.raises(ValueError, match=field):
        SpaceConfig(**change).check()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"trials": 0}, "trials"),
        ({"sampler": "grid"}, "sampler"),
        ({"objectives": ("wer_dev", "size")}, "size"),
        ({"eta": 1.0}, "eta"),
        ({"reference_point": (1.0,)}, "reference_point"),
        ({"name": "a/b"}, "name"),
    ],
)
def test_sweep_config_out_of_range_names_the_field(change, field):
    with pytest.raises(ValueError, match=field):
        SweepConfig(**{"name": "s", **change}).check()


def test_objectives_aliases_and_errors():
    assert parse_objectives("wer_dev, latency") == ("wer_dev", "latency_ms_per_audio_s")
    assert parse_objectives(["wer", "params"]) == ("wer_dev", "params")
    with pytest.raises(ValueError, match="twice"):
        parse_objectives("params,params")
    with pytest.raises(ValueError, match="does not exist"):
        parse_objectives("accuracy")


def test_max_concurrent_from_gpus_then_cpus():
    gpu = SweepConfig(name="s", use_gpu=True, num_workers=2)
    assert max_concurrent_trials(gpu, {"CPU": 64, "GPU": 8}) == 4
    assert max_concurrent_trials(gpu, {"CPU": 64, "GPU": 1}) == 1  # never 0
    cpu = SweepConfig(name="s", num_workers=2, cpus_per_worker=1)  # 2 workers + 1 driver
    assert max_concurrent_trials(cpu, {"CPU": 7}) == 2
    assert max_concurrent_trials(SweepConfig(name="s", max_concurrent=5), {"CPU": 2}) == 5


def test_resolved_paths_are_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = SweepConfig(name="s", workdir="w", storage="r", objectives=("wer", "latency")).resolved()
    assert cfg.workdir == str(tmp_path / "w") and cfg.storage == str(tmp_path / "r")
    assert cfg.objectives == ("wer_dev", "latency_ms_per_audio_s")
    assert SweepConfig(name="s", storage="s3://b/x").resolved().storage == "s3://b/x"


def test_redact_hides_credentials():
    assert redact("https://user:secret@host:5000/x") == "https://***@host:5000/x"
    assert "secret" not in redact("postgresql://u:secret@db/mlflow")
    assert redact("sqlite:////tmp/m.db") == "sqlite:////tmp/m.db"


def test_local_cpus_leave_every_core_to_training():
    from kdprune.orchestration.tuner import local_cpus

    one = SweepConfig(name="s")  # 1 worker x 1 CPU + a 1-CPU trial driver
    assert local_cpus(one, cores=2) == 4
    assert max_concurrent_trials(one, {"CPU": local_cpus(one, cores=2)}) == 2
    two = SweepConfig(name="s", num_workers=2)
    assert local_cpus(two, cores=2) == 3  # the brief's "2-worker trial needs 3 CPUs"
    assert local_cpus(SweepConfig(name="s", cpus_per_worker=4), cores=2) == 5
