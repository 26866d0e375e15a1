"""The paper's comparison at one parameter budget, as a fixed-grid sweep: method × KD ×
schedule × streaming × seed, one trial (one MLflow child run) each, through the same Tuner,
Ray Train trials and MLflow as every other sweep; resumable with --resume.

Rows: l0, l0+KD, LRF, LRF+KD and the small+KD baseline (the paper's); `--extra sequential`
adds l0+KD with the sequential schedule, `--extra streaming` adds l0+KD, LRF+KD and
small+KD streaming. Every row removes the same share of the teacher's encoder parameters
(`--budget`): l0 and small at that target sparsity, LRF at the rank ratio that removes the
same share. Streaming rows distil from the same teacher: the demo teacher is trained with
dynamic chunks (causal convolution), so it decodes both full-context and chunked.

The table (mean ± sd over seeds; every ΔWER with a paired bootstrap 95 % interval over
utterances, seeds pooled) is built from MLflow by `kdprune report --experiment method_table`.

Usage:
    .venv/bin/python sweeps/method_table.py --seeds 0 1 2 --extra sequential streaming
    .venv/bin/python sweeps/method_table.py --preset tiny --seeds 0 1 --steps 10   # minutes
    .venv/bin/python sweeps/method_table.py --teacher path/to/model_dir --budget 0.67
    .venv/bin/python sweeps/method_table.py --train-manifest train.jsonl \
        --dev-manifest dev.jsonl --test-manifest test.jsonl      # your corpus
    .venv/bin/python sweeps/method_table.py --resume             # after the driver died
    .venv/bin/python sweeps/method_table.py --seeds 0 --extra sequential \
        --rows "l0+KD sequential"            # one missing cell; the report pools it in
    .venv/bin/kdprune report --experiment method_table
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from kdprune.orchestration.cli import main
from kdprune.orchestration.config import SpaceConfig, SweepConfig

KD = 1.0  # the KD weight of the "+KD" rows
BUDGET = 0.5  # share of the teacher's encoder parameters every row removes
EXTRAS = ("sequential", "streaming")


def rows(extra: tuple[str, ...] | list[str] = ()) -> list[dict[str, Any]]:
    """The table's rows as config overrides (a row = method, KD, schedule, streaming)."""
    out: list[dict[str, Any]] = [
        {"method": "l0", "kd_weight": 0.0},
        {"method": "l0", "kd_weight": KD},
        {"method": "lrf", "kd_weight": 0.0},
        {"method": "lrf", "kd_weight": KD},
        {"method": "small", "kd_weight": KD},
    ]
    if "sequential" in extra:
        out.append({"method": "l0", "kd_weight": KD, "schedule": "sequential"})
    if "streaming" in extra:
        out += [
            {"method": "l0", "kd_weight": KD, "streaming": True},
            {"method": "lrf", "kd_weight": KD, "streaming": True},
            {"method": "small", "kd_weight": KD, "streaming": True},
        ]
    return out


def select(all_rows: list[dict[str, Any]], names: list[str] | None) -> list[dict[str, Any]]:
    """The rows named in ``names`` (their report labels, e.g. ``l0+KD sequential``; case
    and spacing ignored), all when ``names`` is empty; unknown names are refused."""
    from kdprune.analysis.pareto import row_label

    if not names:
        return all_rows
    norm = lambda s: " ".join(s.lower().split())  # noqa: E731
    labels = {norm(row_label(r)): r for r in all_rows}
    unknown = [n for n in names if norm(n) not in labels]
    if unknown:
        raise SystemExit(
            f"--rows: unknown row(s) {unknown}; with these --extra the rows are "
            f"{[row_label(r) for r in all_rows]}"
        )
    return [labels[norm(n)] for n in names]


def grid(
    budget: float,
    rank_ratio: float,
    seeds: list[int],
    extra: tuple[str, ...] | list[str] = (),
    only: list[str] | None = None,
) -> tuple[dict[str, Any], ...]:
    """One config per row and seed, all at ``budget`` (LRF at ``rank_ratio``); ``only``:
    just the rows of these report labels."""
    return tuple(
        {"target_sparsity": budget, "rank_ratio": rank_ratio, "seed": seed, **row}
        for seed in seeds
        for row in select(rows(extra), only)
    )


def add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--budget", type=float, default=BUDGET,
                   help=f"share of encoder parameters removed by every row (default {BUDGET})")  # fmt: skip
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="default: 0 1 2")
    p.add_argument("--extra", nargs="*", default=[], choices=EXTRAS,
                   help="sequential: l0+KD sequential; streaming: the streaming rows")  # fmt: skip
    p.add_argument("--rows", nargs="+", default=None, metavar="LABEL",
                   help="only these rows, by report label (e.g. 'l0+KD sequential'): fill "
                        "missing cells; the report pools cells of compatible grid runs")  # fmt: skip


def method_grid(args: argparse.Namespace, cfg: SweepConfig) -> tuple[dict[str, Any], ...]:
    """The grid for the parsed flags: the LRF rank ratio matched to the budget on the
    sweep's teacher (the preset's, built and cached on first use, on the sweep's corpus, by
    one Ray Train job on the cluster's workers: `kdprune.orchestration.teacher_job`)."""
    from kdprune.models.model_dir import load_model_dir
    from kdprune.orchestration.teacher_job import sweep_teacher
    from kdprune.pruning.lrf import rank_ratio_for_sparsity
    from kdprune.utils import log

    cfg = cfg.resolved()
    teacher = sweep_teacher(cfg, cfg.manifests)
    ratio = rank_ratio_for_sparsity(load_model_dir(teacher).model, args.budget)
    chosen = select(rows(args.extra), args.rows)
    points = grid(args.budget, ratio, args.seeds, args.extra, args.rows)
    log(
        f"method table: {len(points)} trials ({len(chosen)} rows x seeds "
        f"{args.seeds}), {args.budget:.0%} of the encoder removed (LRF rank ratio {ratio:.3f})"
    )
    return points


if __name__ == "__main__":
    sys.exit(
        main(
            __doc__,
            "method_table",
            SpaceConfig(),
            smoke={"preset": "tiny", "steps": 10, "initial_points": ()},
            defaults={"early_stopping": False},
            extend=add_flags,
            grid=method_grid,
        )
    )
