"""Load a sweep's trials from MLflow into a pandas DataFrame (DESIGN §3 "MLflow layout").

One row per child run tagged ``kdprune.role=trial``: the searched params (typed), the final
metrics, the trial id and what became of the run. Only rows with ``eligible == True``
(run status FINISHED and no ``kdprune.stopped_early=true`` tag) enter Pareto fronts; the
``state`` column says why the others do not (``stopped_early``, ``failed``, ``killed``,
``running``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pandas as pd

from kdprune.contract import (
    FINAL_METRICS,
    PARAM_DATA,
    PARAM_TYPES,
    ROLE_SWEEP,
    ROLE_TRIAL,
    TAG_DATA_PATHS,
    TAG_PARENT,
    TAG_ROLE,
    TAG_STOPPED_EARLY,
    TAG_SYNTHETIC,
    TAG_TRIAL_ID,
    resolve_tracking_uri,
)
from kdprune.utils import log

# Columns every frame from `load_trials` has, whatever the runs logged.
BASE_COLUMNS = (
    "run_id",
    "parent_run_id",
    "trial_id",
    "run_name",
    "status",
    "stopped_early",
    "state",
    "eligible",
    "start_time",
    "end_time",
)


def _client(tracking_uri: str):
    """An MlflowClient, refusing to create an empty sqlite store where none exists
    (MLflow would silently create one, hiding a wrong path)."""
    from mlflow import MlflowClient

    parsed = urlparse(tracking_uri)
    if parsed.scheme == "sqlite":
        db = (
            Path(tracking_uri[len("sqlite:///") :])
            if tracking_uri.startswith("sqlite:///")
            else None
        )
        if db is not None and str(db) != ":memory:" and not db.exists():
            raise ValueError(f"no MLflow store at {tracking_uri} (file {db} does not exist)")
    elif parsed.scheme in ("", "file"):
        root = Path(parsed.path if parsed.scheme == "file" else tracking_uri)
        if not root.exists():
            raise ValueError(f"no MLflow store at {tracking_uri} (folder {root} does not exist)")
    return MlflowClient(tracking_uri=tracking_uri)


def get_experiment_id(client: Any, experiment: str) -> str:
    """Experiment id by name; a ValueError naming the experiments that do exist otherwise."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments())
        raise ValueError(
            f"experiment {experiment!r} not found at {client.tracking_uri}; "
            f"experiments there: {names or 'none'}"
        )
    return exp.experiment_id


def list_sweeps(tracking_uri: str | None = None) -> pd.DataFrame:
    """Sweep parent runs (tag ``kdprune.role=sweep``) in all experiments, newest first:
    columns experiment, experiment_id, parent_run_id, run_name, status, start_time."""
    from mlflow.entities import ViewType

    client = _client(resolve_tracking_uri(tracking_uri))
    exps = {e.experiment_id: e.name for e in client.search_experiments()}
    rows = []
    if exps:
        for run in _search_all(
            client, list(exps), f"tags.`{TAG_ROLE}` = '{ROLE_SWEEP}'", ViewType.ACTIVE_ONLY, 100
        ):
            rows.append(
                {
                    "experiment": exps[run.info.experiment_id],
                    "experiment_id": run.info.experiment_id,
                    "parent_run_id": run.info.run_id,
                    "run_name": run.info.run_name,
                    "status": run.info.status,
                    "start_time": pd.to_datetime(run.info.start_time, unit="ms", utc=True),
                }
            )
    cols = ["experiment", "experiment_id", "parent_run_id", "run_name", "status", "start_time"]
    out = pd.DataFrame(rows, columns=cols)
    return out.sort_values("start_time", ascending=False, ignore_index=True)


def _search_all(client: Any, experiment_ids: list[str], filter_string: str, view, page_size: int):
    """All runs matching a filter, following ``page_token`` until the last page."""
    token = None
    while True:
        page = client.search_runs(
            experiment_ids,
            filter_string=filter_string,
            run_view_type=view,
            max_results=page_size,
            order_by=["attributes.start_time ASC"],
            page_token=token,
        )
        yield from page
        token = page.token
        if not token:
            return


def _typed_param(value: str | None, kind: str) -> Any:
    if value is None or value in ("None", "null", ""):
        return None
    if kind == "float":
        try:
            return float(value)
        except ValueError:
            return None
    if kind == "int":
        try:
            return int(float(value))
        except ValueError:
            return None
    if kind == "bool":
        return value.strip().lower() in ("true", "1", "yes", "on")
    return value


def _state(status: str, stopped_early: bool) -> str:
    if stopped_early:
        return "stopped_early"
    return {"FINISHED": "finished", "FAILED": "failed", "KILLED": "killed"}.get(status, "running")


def _row(run: Any) -> dict[str, Any]:
    tags = run.data.tags
    stopped = str(tags.get(TAG_STOPPED_EARLY, "")).strip().lower() == "true"
    state = _state(run.info.status, stopped)
    row: dict[str, Any] = {
        "run_id": run.info.run_id,
        "parent_run_id": tags.get(TAG_PARENT),
        "trial_id": tags.get(TAG_TRIAL_ID),
        "run_name": run.info.run_name,
        "status": run.info.status,
        "stopped_early": stopped,
        "state": state,
        "eligible": state == "finished",
        "start_time": run.info.start_time,
        "end_time": run.info.end_time,
        "synthetic": str(tags.get(TAG_SYNTHETIC, "")).lower() == "true",
    }
    for name, value in run.data.params.items():
        row[name] = _typed_param(value, PARAM_TYPES.get(name, "str"))
    for name in PARAM_TYPES:
        row.setdefault(name, None)
    row.update(run.data.metrics)  # latest value of each metric, i.e. the final one
    return row


def load_trials(
    experiment: str,
    tracking_uri: str | None = None,
    *,
    parent_run_id: str | None = None,
    page_size: int = 100,
) -> pd.DataFrame:
    """Child runs (tag ``kdprune.role=trial``) of a sweep experiment, one row per run.

    Columns: ``BASE_COLUMNS`` (run ids, trial id, status, ``state``, ``eligible``, start/end
    as UTC timestamps), the searched params typed per ``PARAM_TYPES`` (None when not
    logged), every metric's latest value (``FINAL_METRICS`` always present, NaN when not
    logged) and any other params as strings. Rows are ordered by start time. Pages through
    the search with ``page_token``, so any number of runs loads. ``parent_run_id`` keeps
    one sweep when an experiment holds several. Raises ValueError if the store or the
    experiment does not exist.
    """
    from mlflow.entities import ViewType

    uri = resolve_tracking_uri(tracking_uri)
    client = _client(uri)
    exp_id = get_experiment_id(client, experiment)
    flt = f"tags.`{TAG_ROLE}` = '{ROLE_TRIAL}'"
    if parent_run_id:
        flt += f" AND tags.`{TAG_PARENT}` = '{parent_run_id}'"
    rows = [_row(r) for r in _search_all(client, [exp_id], flt, ViewType.ACTIVE_ONLY, page_size)]
    df = pd.DataFrame(rows)
    for col in BASE_COLUMNS + tuple(PARAM_TYPES):
        if col not in df.columns:
            df[col] = pd.Series(dtype=object)
    for col in FINAL_METRICS:
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df else float("nan")
    for col in ("start_time", "end_time"):
        df[col] = pd.to_datetime(df[col], unit="ms", utc=True)
    if len(df):
        df["eligible"] = df["eligible"].astype(bool)
        df["stopped_early"] = df["stopped_early"].astype(bool)
        df = df.sort_values(["start_time", "run_id"], ignore_index=True)
    log(f"loaded {len(df)} trial runs of experiment {experiment!r} from {uri}")
    return df


def state_counts(df: pd.DataFrame) -> dict[str, int]:
    """Number of trials per state, e.g. ``{"finished": 10, "failed": 1}``."""
    if not len(df):
        return {}
    return {str(k): int(v) for k, v in df["state"].value_counts().sort_index().items()}


def corpora(uri: str, df: pd.DataFrame) -> dict[str, dict[str, str]]:
    """The corpora the trials ran on: their param ``data`` (a short hash of the manifests'
    content) -> ``{split: manifest path}`` from their sweep's tag ({} where not recorded)."""
    client = _client(resolve_tracking_uri(uri))
    out: dict[str, dict[str, str]] = {}
    parents = df["parent_run_id"].dropna().unique() if len(df) else []
    for parent in parents:
        run = client.get_run(parent)
        if run.data.params.get(PARAM_DATA):
            paths = json.loads(run.data.tags.get(TAG_DATA_PATHS, "{}"))
            out[run.data.params[PARAM_DATA]] = paths
    for data in df[PARAM_DATA].dropna().unique() if PARAM_DATA in df else []:
        out.setdefault(str(data), {})
    return out
