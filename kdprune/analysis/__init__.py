"""Pareto analysis of a sweep from MLflow: load trials, fronts, hypervolume, knee point,
per-method fronts, hypervolume history, plots and the Markdown report.

Data flow: `load_trials` (MLflow → DataFrame) → `pareto_front` / `hypervolume` /
`fronts_by` / `knee_point` (pareto) → `paper_comparison` (compare) → plots / artefacts →
`write_report` (report) or `log_front_to_parent` (tracking_front, for the sweep driver).
"""

from kdprune.analysis.compare import PaperComparison, paper_comparison, value_at_budget
from kdprune.analysis.loading import list_sweeps, load_trials
from kdprune.analysis.pareto import (
    add_labels,
    default_reference_point,
    fronts_by,
    hypervolume,
    hypervolume_history,
    knee_point,
    pareto_front,
    pareto_mask,
)
from kdprune.contract import resolve_tracking_uri

__all__ = [
    "PaperComparison",
    "add_labels",
    "default_reference_point",
    "fronts_by",
    "hypervolume",
    "hypervolume_history",
    "knee_point",
    "list_sweeps",
    "load_trials",
    "paper_comparison",
    "pareto_front",
    "pareto_mask",
    "resolve_tracking_uri",
    "value_at_budget",
]
