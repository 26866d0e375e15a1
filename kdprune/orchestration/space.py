"""The define-by-run search space handed to Optuna through `OptunaSearch(space=...)`.

The method decides which knob exists: l0 (and `small`) search ``target_sparsity``, lrf
searches ``rank_ratio``, none searches neither; ``kd_weight`` (0 included) applies to all;
schedule and streaming are searched only when the space lists several values, and the
streaming chunk size only for streaming trials. Everything fixed for the sweep (preset,
seed, steps, the user's manifests) is returned as constants, so a Tune trial's config is a
complete `CompressConfig` dict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kdprune.contract import KNOBS, PARAMS, method_knob
from kdprune.data.selection import manifest_fields
from kdprune.orchestration.config import SpaceConfig


@dataclass(frozen=True)
class SearchSpace:
    """Picklable define-by-run function: ``space(optuna_trial) -> constants``."""

    space: SpaceConfig
    preset: str
    seed: int = 0
    steps: int = 0
    # The config fields naming the user's corpus (`manifest_fields`), the same in every
    # trial; empty: the preset's corpus.
    corpus: dict[str, str] = field(default_factory=dict)

    def __call__(self, trial: Any) -> dict[str, Any]:
        sp = self.space
        method = trial.suggest_categorical("method", list(sp.methods))
        knob = method_knob(method)
        if knob is not None:
            trial.suggest_float(knob, *getattr(sp, knob))
        trial.suggest_categorical("kd_weight", list(sp.kd_weights))
        const: dict[str, Any] = {
            "preset": self.preset,
            "seed": self.seed,
            "steps": self.steps,
            "left_chunks": sp.left_chunks,
            **self.corpus,
        }
        if len(sp.schedules) > 1:
            trial.suggest_categorical("schedule", list(sp.schedules))
        else:
            const["schedule"] = sp.schedules[0]
        if len(set(sp.streaming)) > 1:
            streaming = trial.suggest_categorical("streaming", [False, True])
        else:
            streaming = bool(sp.streaming[0])
            const["streaming"] = streaming
        if streaming and len(sp.chunk_sizes) > 1:
            trial.suggest_categorical("chunk_size", list(sp.chunk_sizes))
        else:
            const["chunk_size"] = sp.chunk_sizes[0]
        return const


def compress_dict(config: dict[str, Any]) -> dict[str, Any]:
    """A Tune trial config -> the `CompressConfig` fields it sets (other keys dropped)."""
    from dataclasses import fields

    from kdprune.compress import CompressConfig

    names = {f.name for f in fields(CompressConfig)}
    out = {k: v for k, v in config.items() if k in names}
    if "streaming" in out:
        out["streaming"] = bool(out["streaming"])
    return out


def logged_params(config: dict[str, Any]) -> dict[str, Any]:
    """The DESIGN §3 MLflow params of a trial: the knob a method does not search is None
    (so a front never shows an l0 trial's unused rank ratio), and ``chunk_size`` is
    logged for streaming trials only."""
    out = {name: config.get(name) for name in PARAMS}
    out["streaming"] = bool(config.get("streaming", False))
    for name in KNOBS:
        if name != method_knob(config.get("method")):
            out[name] = None
    if not out["streaming"]:
        del out["chunk_size"]
    return out


def grid_configs(cfg: Any) -> list[dict[str, Any]]:
    """A `SweepConfig`'s fixed grid as complete trial configs: each point plus what it
    leaves out (preset, steps, seed, schedule, streaming, chunk size, left chunks, the
    corpus's manifests) from the sweep, and every key in every config (None where a point
    has none), as Tune needs."""
    sp = cfg.space
    base = {
        "preset": cfg.preset,
        "steps": cfg.steps,
        "seed": cfg.seed,
        "schedule": sp.schedules[0],
        "streaming": bool(sp.streaming[0]),
        "chunk_size": sp.chunk_sizes[0],
        "left_chunks": sp.left_chunks,
        **manifest_fields(cfg.manifests),
    }
    points = [{**base, **point} for point in cfg.grid]
    keys = sorted({k for p in points for k in p})
    return [{k: p.get(k) for k in keys} for p in points]


def grid_space(configs: list[dict[str, Any]]) -> dict[str, Any]:
    """Tune's param space of a fixed grid: each key a categorical over the values the
    configs give it. With the configs as ``points_to_evaluate`` of a
    `BasicVariantGenerator` and ``num_samples = len(configs)``, Tune runs exactly them."""
    from ray import tune

    space = {}
    for key in configs[0]:
        values: list[Any] = []
        for c in configs:
            if c[key] not in values:
                values.append(c[key])
        space[key] = tune.choice(values)
    return space
