"""Log a sweep's current Pareto front to its MLflow parent run, as trials finish.

For the sweep driver (orchestration), after each finished trial::

    from kdprune.analysis.tracking_front import log_front_to_parent
    from kdprune.analysis.loading import load_trials

    df = load_trials(experiment, tracking_uri, parent_run_id=parent_id)  # or your own frame
    log_front_to_parent(client, parent_id, df, ("wer_dev", "params"), ref, step=len(df))

``df`` is a `load_trials` frame or any frame with ``run_id`` and the objective columns
(``trial_id``, ``method``, ``kd_weight`` and the searched params are used when present;
when an ``eligible`` column exists only its True rows enter the front — pass only finished,
not early-stopped trials otherwise). Every objective is minimised. Keep
``reference_point`` fixed for the whole sweep (e.g. WER 1.0, the teacher's params, the
teacher's latency × 1.5) so the logged ``hypervolume`` curve is comparable across steps
and samplers; None uses `default_reference_point` of ``df``, which moves with the data.

What lands on the parent run (artifacts overwrite the previous step's):
``pareto.csv`` (one row per Pareto-optimal trial: run_id, trial_id, method, label,
objectives, other final metrics, searched params), ``pareto_<y>_vs_<x>.png``,
``hypervolume_history.png``, ``pareto.html``; metrics ``hypervolume`` and ``pareto_size``
at ``step``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from kdprune.analysis.artifacts import write_front_artifacts
from kdprune.contract import DEFAULT_OBJECTIVES


def log_front_to_parent(
    client: Any,
    parent_run_id: str,
    df: pd.DataFrame,
    objectives: Sequence[str] = DEFAULT_OBJECTIVES,
    reference_point: Sequence[float] | None = None,
    step: int | None = None,
) -> dict[str, Any]:
    """Write the front artefacts of ``df`` to the parent run ``parent_run_id`` through
    ``client`` (an ``mlflow.MlflowClient``) and log metric ``hypervolume`` at ``step``
    (default: number of trials in ``df``). Returns the JSON-able summary (front size,
    hypervolume, reference point, artefact names)."""
    step = len(df) if step is None else int(step)
    with tempfile.TemporaryDirectory(prefix="kdprune-front-") as tmp:
        art = write_front_artifacts(df, objectives, Path(tmp), reference_point)
        client.log_artifacts(parent_run_id, tmp)
        summary = art.to_json()
    client.log_metric(parent_run_id, "hypervolume", art.hypervolume, step=step)
    client.log_metric(parent_run_id, "pareto_size", float(len(art.front)), step=step)
    summary = {
        "parent_run_id": parent_run_id,
        "step": step,
        "front_size": summary["front_size"],
        "hypervolume": summary["hypervolume"],
        "reference_point": summary["reference_point"],
        "artifacts": sorted(
            Path(p).name
            for p in [summary["pareto_csv"], summary["plots_html"], *summary["plots_png"].values()]
        ),
        "front_run_ids": [str(r) for r in art.front.get("run_id", pd.Series(dtype=str))],
    }
    return summary
