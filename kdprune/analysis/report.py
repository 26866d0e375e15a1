"""The sweep report: Pareto CSV, PNG + HTML plots and ``report.md`` with the front table,
per-method fronts and the paper-comparison table (``kdprune report``)."""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from kdprune.analysis.artifacts import front_table, write_front_artifacts
from kdprune.analysis.compare import VALUE_COLUMNS, paper_comparison
from kdprune.analysis.loading import corpora, load_trials, state_counts
from kdprune.analysis.pareto import (
    add_labels,
    default_reference_point,
    fronts_by,
    hypervolume,
    knee_point,
)
from kdprune.contract import (
    COUNT_METRICS,
    DEFAULT_OBJECTIVES,
    FINAL_METRICS,
    METRIC_LABELS,
    PARAM_DATA,
    PERCENT_METRICS,
    TAG_DATA_PATHS,
    TAG_SYNTHETIC,
    resolve_tracking_uri,
)
from kdprune.utils import atomic_write_text, default_workdir, log, write_json

PERCENT = set(PERCENT_METRICS)
COUNTS = {*COUNT_METRICS, "budget"}
# The front table: ids, the final metrics but the encoder size and the RTF, the run id.
FRONT_MD_COLUMNS = (
    "trial_id",
    "label",
    "settings",
    *(m for m in FINAL_METRICS if m not in ("encoder_params", "rtf")),
    "run_id",
)


def front_md_columns(objectives: Sequence[str]) -> list[str]:
    """Columns of the front table in Markdown: the key ones, any other objective included."""
    extra = [o for o in objectives if o not in FRONT_MD_COLUMNS]
    return [*FRONT_MD_COLUMNS[:3], *extra, *FRONT_MD_COLUMNS[3:]]


HEADERS = {
    **METRIC_LABELS,
    "rel_wer_dev": "ΔWER dev vs small+KD",
    "rel_wer_test": "ΔWER test vs small+KD",
}


def fmt_value(col: str, v: Any) -> str:
    """Human-readable cell: WER as %, parameter counts with k/M, relative changes signed."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, (bool,)) or not isinstance(v, (int, float)):
        return str(v).replace("|", "\\|")
    if col.startswith("rel_"):
        return f"{v:+.1%}"
    if col in PERCENT:
        return f"{v:.2%}"
    if col in COUNTS:
        return (
            f"{v / 1e6:.3f}M" if abs(v) >= 1e6 else f"{v / 1e3:.1f}k" if abs(v) >= 1e3 else f"{v:g}"
        )
    return f"{v:.4g}"


def markdown_table(df: pd.DataFrame, columns: Sequence[str] | None = None) -> str:
    """A GitHub Markdown table of ``df`` (no extra dependency), cells via `fmt_value`."""
    cols = [c for c in (columns or df.columns) if c in df.columns]
    lines = [
        "| " + " | ".join(HEADERS.get(c, c) for c in cols) + " |",
        "|" + "|".join("---" for _ in cols) + "|",
    ]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(fmt_value(c, row[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def text_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """The same cells as `markdown_table`, as aligned plain text for a terminal; columns
    no row has are left out."""
    cols = [c for c in columns if any(c in r for r in rows)]
    cells = [[HEADERS.get(c, c) for c in cols]]
    cells += [[fmt_value(c, r.get(c)).replace("\\|", "|") for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


def method_summary(
    df: pd.DataFrame, objectives: Sequence[str], ref: Sequence[float]
) -> pd.DataFrame:
    """Per method label: trials, finished, front size, hypervolume at the common reference
    point, best first objective, smallest params."""
    df = add_labels(df)
    fronts = fronts_by(df, objectives, by="label")
    rows = []
    for label, front in fronts.items():
        grp = df[df["label"] == label]
        rows.append(
            {
                "label": label,
                "trials": len(grp),
                "finished": int(grp["eligible"].sum()),
                "front size": len(front),
                "hypervolume": hypervolume(front[list(objectives)].to_numpy(dtype=float), ref),
                objectives[0]: float(front[objectives[0]].min()),
                "params": float(front["params"].min()) if "params" in front else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def _header(
    experiment: str, uri: str, df: pd.DataFrame, found: dict[str, dict[str, str]]
) -> list[str]:
    counts = state_counts(df)
    parents = df["parent_run_id"].nunique() if len(df) else 0
    return (
        [
            f"# Pareto report: {experiment}",
            "",
            f"- Tracking URI: `{uri}`",
            f"- Generated: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
            f"- Trials: {len(df)} in {parents} sweep run(s); by state: "
            + (", ".join(f"{k} {v}" for k, v in counts.items()) or "none"),
            "- Only finished trials that were not stopped early enter fronts.",
            *_data_lines(found),
        ]
        + (
            [f"- **Synthetic runs** (tag {TAG_SYNTHETIC}=true): made-up numbers, not results."]
            if len(df) and df["synthetic"].any()
            else []
        )
        + [""]
    )


def _data_lines(found: dict[str, dict[str, str]]) -> list[str]:
    if not found:
        return [f"- Data: not recorded (no param `{PARAM_DATA}`: a sweep from before it)"]
    lines = [f"- Data (param `{PARAM_DATA}`, a hash of the manifests' content; their paths:"]
    lines[0] += f" tag `{TAG_DATA_PATHS}`):"
    for data, paths in found.items():
        where = ", ".join(f"{split} `{path}`" for split, path in paths.items())
        lines.append(f"  - `{data}`: {where or 'paths not recorded'}")
    if len(found) > 1:
        lines.append("  - **The trials ran on several corpora: compare WERs within one.**")
    return lines


def _excluded(df: pd.DataFrame) -> list[str]:
    bad = add_labels(df[~df["eligible"]]) if len(df) else df
    if not len(bad):
        return []
    cols = ["run_id", "trial_id", "state", "label", "settings"]
    return ["## Trials left out of the fronts", "", markdown_table(bad, cols)]


def _no_front(status: str, message: str, lines: list[str], df, out_dir: Path, base: dict) -> dict:
    lines += [f"**{message}**", ""] + _excluded(df)
    report = out_dir / "report.md"
    atomic_write_text(report, "\n".join(lines))
    log(message)
    result = {**base, "status": status, "message": message, "report": str(report)}
    write_json(out_dir / "report.json", result)
    return result


def sweep_reference_point(
    uri: str, df: pd.DataFrame, objectives: Sequence[str]
) -> tuple[float, ...] | None:
    """The fixed reference point the sweep logged on its parent run (so the report's
    hypervolume is the sweep's), when all trials share one parent with these objectives."""
    import ast

    from mlflow.tracking import MlflowClient

    parents = df["parent_run_id"].dropna().unique() if "parent_run_id" in df else []
    if len(parents) != 1:
        return None
    params = MlflowClient(uri).get_run(parents[0]).data.params
    try:
        if list(ast.literal_eval(params["objectives"])) != list(objectives):
            return None
        return tuple(float(x) for x in ast.literal_eval(params["reference_point"]))
    except (KeyError, ValueError, SyntaxError, TypeError):
        return None


def write_report(
    experiment: str,
    tracking_uri: str | None = None,
    out_dir: Path | None = None,
    objectives: tuple[str, ...] = DEFAULT_OBJECTIVES,
    reference_point: Sequence[float] | None = None,
    register: str | None = None,
) -> dict:
    """Write ``pareto.csv``, plots (PNG + ``pareto.html``), ``paper_comparison.csv``,
    ``report.md`` and ``report.json`` for sweep ``experiment`` into ``out_dir`` (default
    ``<workdir>/reports/<experiment>``) and return the JSON-able summary. A fixed-grid
    sweep (`sweeps/method_table.py`) also gets its method table (``method_table.csv``,
    ``method_deltas.csv``: `kdprune.analysis.method_table`).

    ``register``: ``"knee"`` puts the knee run's model in the MLflow Model Registry (as a
    new version of ``kdprune-<experiment>``), ``"front"`` every front run's.

    Raises ValueError when the store or the experiment does not exist. An experiment with
    no trial runs, or none finished, or none with the objectives logged, still gets a
    ``report.md`` saying so, and the result has ``status`` ≠ "ok" and a ``message``.
    """
    uri = resolve_tracking_uri(tracking_uri)
    out_dir = Path(out_dir) if out_dir else default_workdir() / "reports" / experiment
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    objectives = tuple(objectives)
    df = load_trials(experiment, uri)
    found = corpora(uri, df)
    lines = _header(experiment, uri, df, found)
    base: dict[str, Any] = {
        "experiment": experiment,
        "tracking_uri": uri,
        "out_dir": str(out_dir),
        "objectives": list(objectives),
        "num_runs": int(len(df)),
        "num_finished": int(df["eligible"].sum()) if len(df) else 0,
        "states": state_counts(df),
        "front_size": 0,
        "hypervolume": None,
        PARAM_DATA: found,
    }
    if not len(df):
        msg = f"experiment {experiment!r} has no trial runs (tag kdprune.role=trial)"
        return _no_front("empty", msg, lines, df, out_dir, base)
    if not df["eligible"].any():
        msg = f"experiment {experiment!r} has no finished trials: " + ", ".join(
            f"{v} {k}" for k, v in state_counts(df).items()
        )
        return _no_front("no_finished_trials", msg, lines, df, out_dir, base)
    ok = df[df["eligible"]]
    missing = [o for o in objectives if o not in ok or ok[o].isna().all()]
    if missing:
        msg = f"no finished trial has logged objective(s) {missing}; cannot build a front"
        return _no_front("no_objective_values", msg, lines, df, out_dir, base)

    ref = (
        tuple(reference_point)
        if reference_point
        else sweep_reference_point(uri, df, objectives) or default_reference_point(df, objectives)
    )
    art = write_front_artifacts(df, objectives, out_dir, ref)
    front = add_labels(art.front)
    knee = knee_point(front, objectives)
    box = math.prod(ref)
    hv_norm = art.hypervolume / box if box > 0 else None
    comparison = paper_comparison(df)
    comparison.table.to_csv(out_dir / "paper_comparison.csv", index=False)
    summary = method_summary(df, objectives, ref)
    grid, knee_cmp = _evidence(experiment, uri, df, knee, out_dir)

    obj_txt = ", ".join(f"{o} ≤ {fmt_value(o, r)}" for o, r in zip(objectives, ref, strict=True))
    lines += [
        f"- Objectives (all minimised): {', '.join(objectives)}; reference point: {obj_txt}",
        f"- Front: {len(front)} trial(s); hypervolume {art.hypervolume:.6g}"
        + (f" ({hv_norm:.2%} of the box from 0 to the reference point)" if hv_norm else ""),
        f"- Knee point: {knee['label']} {knee['settings']} — "
        + ", ".join(f"{o} {fmt_value(o, knee[o])}" for o in objectives)
        + f" (run `{knee['run_id']}`)",
        "",
        *_grid_lines(grid),
        *_knee_lines(knee_cmp),
        f"## Pareto front ({', '.join(objectives)})",
        "",
        markdown_table(front_table(front, objectives), front_md_columns(objectives)),
        "All columns (ids, every metric and param) are in `pareto.csv`.",
        "",
        "## Per-method fronts",
        "",
        "Hypervolume of each method's own front at the same reference point (larger is better).",
        "",
        markdown_table(summary),
    ]
    if grid is None:  # a fixed grid is compared in its method table, at its one budget
        lines += [
            "## Paper comparison at matched parameter budgets",
            "",
            *(f"- {n}" for n in comparison.notes),
            "- ΔWER: relative change vs the small+KD baseline at the same budget "
            "(negative = better than the baseline).",
            "",
        ]
        cols = ["row", *VALUE_COLUMNS, "rel_wer_dev", "rel_wer_test", "match", "runs"]
        for (section, budget), tab in comparison.table.groupby(["section", "budget"], sort=False):
            lines += [f"### {section} at {fmt_value('budget', budget)} params", ""]
            lines += [markdown_table(tab, cols)]
    lines += ["## Plots", ""]
    for name, png in art.plots_png.items():
        lines += [f"![{name}]({png.name})", ""]
    lines += [f"Interactive version: [{art.plots_html.name}]({art.plots_html.name})", ""]
    lines += _excluded(df)
    report = out_dir / "report.md"
    atomic_write_text(report, "\n".join(lines))
    result = {
        **base,
        **art.to_json(),
        "status": "ok",
        "report": str(report),
        "paper_comparison_csv": str(out_dir / "paper_comparison.csv"),
        "hypervolume_normalized": hv_norm,
        "knee": {
            "run_id": knee["run_id"],
            "trial_id": knee.get("trial_id"),
            "label": knee["label"],
            **{o: float(knee[o]) for o in objectives},
        },
        "budgets": list(comparison.budgets),
        "front": front_table(front, objectives)[["run_id", "label", *objectives]].to_dict(
            "records"
        ),
    }
    if grid is not None:
        result["method_table_csv"] = str(out_dir / "method_table.csv")
        result["method_deltas_csv"] = str(out_dir / "method_deltas.csv")
        result["method_table"] = _plain_records(grid.rows)
        result["method_deltas"] = _plain_records(grid.deltas)
    if len(knee_cmp):
        result["knee_deltas"] = _plain_records(knee_cmp)
    if register:
        from kdprune.orchestration.run_content import register_runs

        chosen = [knee] if register == "knee" else [r for _, r in front.iterrows()]
        result["registered"] = register_runs(uri, experiment, [dict(r) for r in chosen])
    write_json(out_dir / "report.json", result)
    log(f"report for {experiment!r}: {len(front)} front trial(s) -> {report}")
    return result


def _evidence(experiment: str, uri: str, df: pd.DataFrame, knee: pd.Series, out_dir: Path):
    """The method table (a fixed-grid sweep; None otherwise) and the knee comparison,
    with paired bootstrap intervals from the runs' per-utterance artefacts."""
    from mlflow import MlflowClient

    from kdprune.analysis.method_table import knee_deltas, load_method_table, mlflow_utterances

    grid = load_method_table(experiment, uri, df=df)
    if grid is not None:
        grid.rows.to_csv(out_dir / "method_table.csv", index=False)
        grid.deltas.to_csv(out_dir / "method_deltas.csv", index=False)
    with tempfile.TemporaryDirectory(prefix="kdprune-utts-") as tmp:
        knee_cmp = knee_deltas(df, knee, mlflow_utterances(MlflowClient(uri), tmp))
    return grid, knee_cmp


def _grid_lines(grid) -> list[str]:
    if grid is None:
        return []
    from kdprune.analysis.method_table import markdown

    runs = ", ".join(f"`{p}`" for p in grid.parent_run_ids or [grid.parent_run_id])
    return [
        "## Method table",
        "",
        f"Fixed-grid sweep run{'s' if len(runs) > 1 else ''} {runs}: every row at one "
        "parameter budget, one run per seed. As data: `method_table.csv`, "
        "`method_deltas.csv`.",
        "",
        markdown(grid),
    ]


def _knee_lines(knee_cmp: pd.DataFrame) -> list[str]:
    if not len(knee_cmp):
        return []
    from kdprune.analysis.method_table import deltas_markdown

    return [
        "### Knee vs the nearest-size run of the small+KD baseline",
        "",
        deltas_markdown(knee_cmp),
    ]


def _plain_records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-able records: NaN as None, numpy scalars as Python ones."""

    def plain(v: Any) -> Any:
        v = v.item() if hasattr(v, "item") else v
        return None if isinstance(v, float) and math.isnan(v) else v

    return [{k: plain(v) for k, v in rec.items()} for rec in df.to_dict("records")]
