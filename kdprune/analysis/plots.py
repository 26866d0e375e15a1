"""Pareto plots: static PNG (matplotlib) and interactive HTML (plotly).

Front plots draw every finished trial coloured by method label; each label's own front is
a step line (the best ``y`` reachable with at most ``x``), its points labelled with their
settings; dominated trials are faded (hover over them in the HTML for their settings).
Matplotlib figures are built without pyplot, so saving them never touches a GUI backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from kdprune.analysis.pareto import (
    LABEL_ORDER,
    add_labels,
    eligible,
    fronts_by,
    is_true,
    knee_point,
    label_sort_key,
    pareto_front,
)
from kdprune.contract import COUNT_METRICS, METRIC_LABELS

_PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip


def label_color(label: str) -> str:
    """A stable colour per method label, so every plot uses the same one."""
    base = label.split(" (")[0]
    i = LABEL_ORDER.index(base) if base in LABEL_ORDER else hash(base) % len(_PALETTE)
    return _PALETTE[i % len(_PALETTE)]


def _prepared(df: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Eligible trials with both values; when the sweep mixes streaming and full-context
    runs, streaming ones get their own label (and front), e.g. "l0+KD (streaming)"."""
    df = add_labels(df) if "label" not in df.columns else df.copy()
    df = eligible(df)
    df = df[df[x].notna() & df[y].notna()].copy()
    if "streaming" in df and df["streaming"].map(is_true).nunique() > 1:
        stream = df["streaming"].map(is_true)
        df.loc[stream, "label"] = df.loc[stream, "label"] + " (streaming)"
    return df


def _style(label: str) -> dict:
    return {"color": label_color(label), "ls": "--" if label.endswith("(streaming)") else "-"}


def _step_xy(front: pd.DataFrame, x: str, y: str) -> tuple[list[float], list[float]]:
    """Vertices of the attainment step line of a front sorted by x (steps after each point)."""
    f = front.sort_values([x, y])
    xs, ys = [], []
    for px, py in zip(f[x], f[y], strict=True):
        if xs:
            xs.append(px)
            ys.append(ys[-1])
        xs.append(px)
        ys.append(py)
    return xs, ys


def front_figure_png(df: pd.DataFrame, x: str, y: str = "wer_dev", title: str | None = None):
    """Matplotlib Figure of ``y`` vs ``x`` with per-label fronts and the overall knee."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter

    data = _prepared(df, x, y)
    fig = Figure(figsize=(8, 5.5), layout="constrained")
    ax = fig.add_subplot()
    fronts = fronts_by(data, (y, x), by="label") if len(data) else {}
    for label in sorted(data["label"].unique(), key=label_sort_key) if len(data) else []:
        pts, style = data[data["label"] == label], _style(label)
        color = style["color"]
        front = fronts.get(label, pts.iloc[:0])
        dominated = pts.drop(front.index)
        ax.scatter(dominated[x], dominated[y], color=color, alpha=0.25, s=18, linewidths=0)
        ax.scatter(front[x], front[y], color=color, s=36, label=f"{label} ({len(pts)})",
                   marker="o" if style["ls"] == "-" else "s")  # fmt: skip
        ax.plot(*_step_xy(front, x, y), color=color, ls=style["ls"], lw=1.5)
        for _, r in front.iterrows():
            ax.annotate(
                r["settings"], (r[x], r[y]), textcoords="offset points", xytext=(4, 4),
                fontsize=7, color=color,
            )  # fmt: skip
    overall = pareto_front(data, (y, x)) if len(data) else data
    if len(overall):
        ax.plot(*_step_xy(overall, x, y), color="black", lw=0.8, ls="--", label="overall front")
        knee = knee_point(overall, (y, x))
        ax.scatter([knee[x]], [knee[y]], marker="*", s=220, facecolor="none", edgecolor="black",
                   label="knee")  # fmt: skip
    if x in COUNT_METRICS:
        ax.xaxis.set_major_formatter(EngFormatter())
    ax.set_xlabel(METRIC_LABELS.get(x, x))
    ax.set_ylabel(METRIC_LABELS.get(y, y))
    ax.set_title(
        title or f"{METRIC_LABELS.get(y, y)} vs {METRIC_LABELS.get(x, x)} (lower is better)"
    )
    ax.grid(alpha=0.3)
    if len(data):
        ax.legend(fontsize=8, title="method (trials)", title_fontsize=8)
    return fig


def front_figure_html(df: pd.DataFrame, x: str, y: str = "wer_dev", title: str | None = None):
    """Plotly Figure of the same plot; hover shows each trial's settings and ids."""
    import plotly.graph_objects as go

    data = _prepared(df, x, y)
    fig = go.Figure()
    fronts = fronts_by(data, (y, x), by="label") if len(data) else {}
    for label in sorted(data["label"].unique(), key=label_sort_key) if len(data) else []:
        pts, color = data[data["label"] == label], label_color(label)
        front = fronts.get(label, pts.iloc[:0])
        on = pts.index.isin(front.index)
        hover = [
            f"{r['label']} {r['settings']}<br>trial {r.get('trial_id')}<br>run {r['run_id']}"
            for _, r in pts.iterrows()
        ]
        fig.add_trace(go.Scatter(
            x=pts[x], y=pts[y], mode="markers", name=f"{label} ({len(pts)})",
            legendgroup=label, hovertext=hover, hoverinfo="text+x+y",
            marker={"color": color, "opacity": [1.0 if o else 0.25 for o in on], "size": 8},
        ))  # fmt: skip
        sx, sy = _step_xy(front, x, y)
        dash = "dash" if _style(label)["ls"] == "--" else "solid"
        fig.add_trace(go.Scatter(
            x=sx, y=sy, mode="lines", line={"color": color, "dash": dash}, legendgroup=label,
            showlegend=False, hoverinfo="skip",
        ))  # fmt: skip
    fig.update_layout(
        title=title or f"{METRIC_LABELS.get(y, y)} vs {METRIC_LABELS.get(x, x)} (lower is better)",
        xaxis_title=METRIC_LABELS.get(x, x),
        yaxis_title=METRIC_LABELS.get(y, y),
        template="plotly_white",
    )
    return fig


def history_figure_png(history: pd.DataFrame, title: str = "Hypervolume over trials"):
    """Matplotlib Figure of a `hypervolume_history` frame (or several, by a ``series`` column)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    groups = history.groupby("series") if "series" in history else [(None, history)]
    for name, h in groups:
        ax.step(h["trial_index"], h["hypervolume"], where="post", label=name)
    ax.set_xlabel("trials started")
    ax.set_ylabel("hypervolume")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if "series" in history:
        ax.legend(fontsize=8)
    return fig


def history_figure_html(history: pd.DataFrame, title: str = "Hypervolume over trials"):
    import plotly.graph_objects as go

    fig = go.Figure()
    groups = history.groupby("series") if "series" in history else [("hypervolume", history)]
    for name, h in groups:
        fig.add_trace(go.Scatter(x=h["trial_index"], y=h["hypervolume"], mode="lines",
                                 line_shape="hv", name=str(name)))  # fmt: skip
    fig.update_layout(title=title, xaxis_title="trials started", yaxis_title="hypervolume",
                      template="plotly_white")  # fmt: skip
    return fig


def save_png(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def save_html(figs: Sequence, path: Path, title: str = "kdprune Pareto analysis") -> Path:
    """All plotly figures in one self-contained HTML file (plotly.js embedded once, so it
    opens offline)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = [f.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, f in enumerate(figs)]
    body = "\n".join(parts)
    path.write_text(
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title></head>"
        f"<body>\n{body}\n</body></html>\n"
    )
    return path
