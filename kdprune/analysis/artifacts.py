"""The Pareto artefacts of a sweep, written to a folder: ``pareto.csv``, one PNG per 2-D view
(``pareto_<y>_vs_<x>.png``), ``hypervolume_history.png`` and ``pareto.html`` (all plotly
figures in one offline file). Shared by the report and by the sweep's parent-run logging.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from kdprune.analysis.pareto import (
    add_labels,
    default_reference_point,
    hypervolume,
    hypervolume_history,
    pareto_front,
)
from kdprune.analysis.plots import (
    front_figure_html,
    front_figure_png,
    history_figure_html,
    history_figure_png,
    save_html,
    save_png,
)
from kdprune.contract import FINAL_METRICS, LATENCY, PARAM_TYPES

ID_COLUMNS = ("run_id", "trial_id", "parent_run_id", "label", "method", "settings")


@dataclass(frozen=True)
class FrontArtifacts:
    """What `write_front_artifacts` wrote, and the front and hypervolume history it drew."""

    pareto_csv: Path
    plots_png: dict[str, Path]  # view name (e.g. "wer_dev_vs_params") -> PNG
    plots_html: Path
    front: pd.DataFrame  # the Pareto-optimal eligible trials, sorted by the objectives
    history: pd.DataFrame  # `hypervolume_history` of all trials
    hypervolume: float
    reference_point: tuple[float, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "pareto_csv": str(self.pareto_csv),
            "plots_png": {k: str(v) for k, v in self.plots_png.items()},
            "plots_html": str(self.plots_html),
            "front_size": int(len(self.front)),
            "hypervolume": self.hypervolume,
            "reference_point": list(self.reference_point),
        }


def front_table(front: pd.DataFrame, objectives: Sequence[str]) -> pd.DataFrame:
    """The CSV/Markdown view of a front: ids, label, objectives, other final metrics, the
    searched params; only columns present in ``front``."""
    front = add_labels(front) if "label" not in front.columns else front
    cols: list[str] = []
    for c in (*ID_COLUMNS, *objectives, *FINAL_METRICS, *PARAM_TYPES):
        if c in front.columns and c not in cols:
            cols.append(c)
    return front[cols].reset_index(drop=True)


def plot_views(df: pd.DataFrame, objectives: Sequence[str]) -> list[tuple[str, str]]:
    """2-D (x, y) views to draw: the first objective (a WER) against each other objective,
    and against params and latency when the trials have them."""
    y = objectives[0]
    xs = list(objectives[1:])
    for extra in ("params", LATENCY):
        if extra not in xs and extra != y and extra in df and df[extra].notna().any():
            xs.append(extra)
    return [(x, y) for x in xs]


def write_front_artifacts(
    df: pd.DataFrame,
    objectives: Sequence[str],
    out_dir: Path,
    reference_point: Sequence[float] | None = None,
) -> FrontArtifacts:
    """Write the front CSV and plots of trials ``df`` (a `load_trials` frame, or any frame
    with ``run_id`` and the objective columns) into ``out_dir``. ``reference_point``
    defaults to `default_reference_point` of ``df``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    objectives = tuple(objectives)
    df = add_labels(df)
    ref = (
        tuple(reference_point)
        if reference_point is not None
        else default_reference_point(df, objectives)
    )
    front = pareto_front(df, objectives)
    csv = out_dir / "pareto.csv"
    front_table(front, objectives).to_csv(csv, index=False)
    pngs: dict[str, Path] = {}
    html_figs = []
    for x, y in plot_views(df, objectives):
        key = f"{y}_vs_{x}"
        pngs[key] = save_png(front_figure_png(df, x, y), out_dir / f"pareto_{key}.png")
        html_figs.append(front_figure_html(df, x, y))
    history = hypervolume_history(df, objectives, ref)
    pngs["hypervolume_history"] = save_png(
        history_figure_png(history), out_dir / "hypervolume_history.png"
    )
    html_figs.append(history_figure_html(history))
    html = save_html(html_figs, out_dir / "pareto.html")
    hv = hypervolume(front[list(objectives)].to_numpy(dtype=float), ref) if len(front) else 0.0
    return FrontArtifacts(csv, pngs, html, front, history, hv, ref)
