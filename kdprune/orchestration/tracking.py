"""MLflow tracking of a sweep (DESIGN §3 "MLflow layout"), all from the sweep driver.

The driver is the only process that talks to MLflow: workers report to Ray Train, Train
forwards rank 0's reports to Tune, and `MlflowSweepCallback` (a Tune callback in the
driver) writes them. So a sqlite store on the driver's disk works on any cluster, and
nothing is logged twice by several ranks.

Layout: experiment = sweep name; one parent run per sweep run (``kdprune.role=sweep``);
one nested child per Tune trial (``mlflow.parentRunId``, ``kdprune.role=trial``,
``kdprune.trial_id``), found again by its trial id when the trial is retried or the sweep
resumed (``kdprune.attempt`` counts the starts); per-step training metrics at the log
interval (``train/loss_rnnt``, ``prune/lambda1``...) and rung metrics namespaced
(``eval/wer_dev``, ``prune/expected_params``...), final metrics plain (``wer_dev``...).
The parent's ``pareto.csv``, plots and ``hypervolume`` are rewritten as trials end.
Every name is `kdprune.contract`'s.
"""

from __future__ import annotations

import math
import re
import sqlite3
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ray.tune import Callback

from kdprune.contract import (
    METRIC_LABELS,
    ROLE_SWEEP,
    ROLE_TRIAL,
    RUNG_METRICS,
    SWEEP_SEARCH,
    TAG_ATTEMPT,
    TAG_FAILURE_REASON,
    TAG_MODEL_DIR,
    TAG_NOTE,
    TAG_ORPHANED,
    TAG_PARENT,
    TAG_ROLE,
    TAG_STOPPED_AT_STEP,
    TAG_STOPPED_EARLY,
    TAG_SWEEP_KIND,
    TAG_SWEEP_RUN,
    TAG_TRIAL_ID,
    artifact_location,
    manifest_field,
    method_knob,
)
from kdprune.orchestration import run_content
from kdprune.orchestration.space import logged_params
from kdprune.utils import log

# Tune / Train bookkeeping in a result, never logged as metrics.
BOOKKEEPING = {
    "step",
    "rung",
    "final",
    "stopped_early",
    "failed",
    "done",
    "timestamp",
    "training_iteration",
    "time_this_iter_s",
    "time_total_s",
    "time_since_restore",
    "iterations_since_restore",
    "pid",
    "checkpoint_dir_name",
    "should_checkpoint",
}


class TrackingUnavailable(RuntimeError):
    """The MLflow tracking URI cannot be used; raised before any trial starts."""


def check_tracking_uri(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, with the URI in the message, when the store cannot be reached."""
    from kdprune.orchestration.config import redact

    try:
        if uri.startswith("sqlite:///"):
            db = Path(uri[len("sqlite:///") :])
            db.parent.mkdir(parents=True, exist_ok=True)
            with sqlite3.connect(db, timeout=timeout_s) as con:
                con.execute("select 1")
        elif uri.startswith(("http://", "https://")):
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as r:
                if r.status != 200:
                    raise OSError(f"HTTP {r.status}")
        elif uri.startswith("file:"):
            Path(uri[len("file://") :]).mkdir(parents=True, exist_ok=True)
    except (OSError, sqlite3.Error, urllib.error.URLError) as exc:
        raise TrackingUnavailable(
            f"MLflow tracking URI {redact(uri)} cannot be reached ({exc}); "
            "start the server or set MLFLOW_TRACKING_URI to a reachable store"
        ) from exc


def _numeric(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


class SweepTracker:
    """Parent and child runs of one sweep run; every MLflow call of the sweep goes here."""

    def __init__(
        self,
        uri: str,
        experiment: str,
        run_name: str,
        manifests: dict[str, str] | None = None,
    ) -> None:
        """``manifests``: the corpus ({split: manifest path}): every run's dataset inputs,
        its param ``data`` (a short hash of the manifests' content) and its tag
        ``kdprune.data_paths`` (their paths)."""
        from mlflow import MlflowClient

        self.uri, self.experiment, self.run_name = uri, experiment, run_name
        self.client = MlflowClient(tracking_uri=uri)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            self.experiment_id = self.client.create_experiment(
                experiment, artifact_location=artifact_location(uri)
            )
        else:
            self.experiment_id = exp.experiment_id
        run_content.set_experiment_kind(self.client, self.experiment_id)
        self._children: dict[str, str] = {}
        self.manifests = dict(manifests or {})
        self._datasets: list | None = None
        self._data: dict[str, str] | None = None

    @property
    def datasets(self) -> list:
        """The corpus as MLflow dataset inputs (built once)."""
        if self._datasets is None:
            self._datasets = run_content.corpus_datasets(self.manifests)
        return self._datasets

    @property
    def data(self) -> dict[str, str]:
        """The corpus's param ``data`` and paths tag (built once; {}: no corpus)."""
        if self._data is None:
            self._data = run_content.corpus_data(self.manifests)
        return self._data

    # -- parent ---------------------------------------------------------------------------
    def parent_run(self, params: dict[str, Any], kind: str = SWEEP_SEARCH) -> str:
        """The sweep run's parent (reused on resume, found by its sweep-run tag), with a
        description of how to compare its runs and the corpus as dataset inputs; ``kind``:
        ``search`` (Optuna) or ``grid`` (fixed configurations)."""
        runs = self.client.search_runs(
            [self.experiment_id],
            f"tags.`{TAG_ROLE}` = '{ROLE_SWEEP}' AND tags.`{TAG_SWEEP_RUN}` = '{self.run_name}'",
            max_results=1,
        )
        if runs:
            run_id = runs[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        run = self.client.create_run(
            self.experiment_id,
            run_name=self.run_name,
            tags={
                TAG_ROLE: ROLE_SWEEP,
                TAG_SWEEP_RUN: self.run_name,
                TAG_SWEEP_KIND: kind,
                TAG_NOTE: run_content.parent_note(self.experiment, kind, self.experiment_id),
            },
        )
        from mlflow.entities import Param

        corpus = {manifest_field(s) for s in self.manifests}  # the paths go in the data tag
        self.client.log_batch(
            run.info.run_id,
            params=[Param(k, str(v)[:6000]) for k, v in params.items() if k not in corpus],
        )
        run_content.log_corpus(self.client, run.info.run_id, self.datasets, self.data)
        return run.info.run_id

    # -- children -------------------------------------------------------------------------
    def child_run(self, parent_id: str, trial_id: str, config: dict[str, Any]) -> tuple[str, int]:
        """The trial's child run and its attempt number (1 when created now)."""
        run_id = self._children.get(trial_id) or self._find_child(parent_id, trial_id)
        if run_id is not None:
            run = self.client.get_run(run_id)
            attempt = int(run.data.tags.get(TAG_ATTEMPT, "1")) + 1
            self.client.set_tag(run_id, TAG_ATTEMPT, str(attempt))
            self.client.update_run(run_id, status="RUNNING")
            self._children[trial_id] = run_id
            return run_id, attempt
        from kdprune.analysis.pareto import run_name

        params = logged_params(config)
        run = self.client.create_run(
            self.experiment_id,
            run_name=run_name(params),
            tags={
                TAG_PARENT: parent_id,
                TAG_ROLE: ROLE_TRIAL,
                TAG_TRIAL_ID: trial_id,
                TAG_ATTEMPT: "1",
            },
        )
        from mlflow.entities import Param

        self.client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
        run_content.log_trial_config(self.client, run.info.run_id, config)
        run_content.log_corpus(self.client, run.info.run_id, self.datasets, self.data)
        self._children[trial_id] = run.info.run_id
        return run.info.run_id, 1

    def _find_child(self, parent_id: str, trial_id: str) -> str | None:
        runs = self.client.search_runs(
            [self.experiment_id],
            f"tags.`{TAG_TRIAL_ID}` = '{trial_id}' AND tags.`{TAG_PARENT}` = '{parent_id}'",
            max_results=2,
        )
        return runs[0].info.run_id if runs else None

    def log_rung(self, run_id: str, result: dict[str, Any]) -> None:
        """An intermediate result (a rung's evaluation or a log interval's training means)
        as metrics at its ``step``: rung keys renamed per `RUNG_METRICS`, namespaced keys
        (``train/loss_rnnt``) as they are, bookkeeping dropped."""
        from mlflow.entities import Metric

        step = int(_numeric(result.get("step")) or 0)
        now = int(time.time() * 1000)
        metrics = []
        for key, value in result.items():
            v = _numeric(value)
            if v is None or key in BOOKKEEPING or not math.isfinite(v):
                continue
            name = RUNG_METRICS.get(key, key if "/" in key else None)
            if name:
                metrics.append(Metric(name, v, now, step))
        if metrics:
            self.client.log_batch(run_id, metrics=metrics)

    def finish_child(self, run_id: str, result: dict[str, Any] | None, error: str = "") -> str:
        """Close a child from the trial's last result; returns its state."""
        from mlflow.entities import Metric

        result = result or {}
        now = int(time.time() * 1000)
        trial_s = _numeric(result.get("time_total_s"))
        if trial_s is not None:
            self.client.log_metric(run_id, "time/trial_s", trial_s, now, 0)
        if error or result.get("failed") or not result.get("final"):
            reason = error or str(result.get("failed") or "trial ended without final metrics")
            self.client.set_tag(run_id, TAG_FAILURE_REASON, reason[:5000])
            self.client.set_terminated(run_id, "FAILED")
            return "failed"
        if result.get("stopped_early"):
            self.client.set_tag(run_id, TAG_STOPPED_EARLY, "true")
            self.client.set_tag(run_id, TAG_STOPPED_AT_STEP, str(result.get("step")))
            self.client.set_terminated(run_id, "FINISHED")
            return "stopped_early"
        metrics = [
            Metric(k, v, now, 0)
            for k, raw in result.items()
            if k not in BOOKKEEPING
            and "/" not in k
            and k not in RUNG_METRICS.keys() - {"wer_dev"}
            and (v := _numeric(raw)) is not None
            and math.isfinite(v)
        ]
        self.client.log_batch(run_id, metrics=metrics)
        if result.get("model_dir"):
            self.client.set_tag(run_id, TAG_MODEL_DIR, str(result["model_dir"]))
        final = {k: v for k, v in result.items() if k not in BOOKKEEPING}
        try:
            run_content.log_trial_results(self.client, run_id, final)
        except Exception as exc:  # the metrics are in; say what is missing, keep the sweep going
            log(f"could not log the artefacts of run {run_id}: {exc!r}")
        self.client.set_tag(run_id, TAG_STOPPED_EARLY, "false")
        self.client.set_terminated(run_id, "FINISHED")
        return "finished"

    def mark_interrupted(self, parent_id: str) -> int:
        """A stopped sweep (SIGINT, SIGTERM): its parent and every child still RUNNING are
        KILLED; a resume reopens them (`parent_run`, `child_run`). Returns the children
        marked. Idempotent: called as the signal arrives and again once Tune stopped."""
        runs = self.client.search_runs(
            [self.experiment_id],
            f"tags.`{TAG_PARENT}` = '{parent_id}' AND attributes.status = 'RUNNING'",
        )
        for run in runs:
            self.client.set_terminated(run.info.run_id, "KILLED")
        self.client.set_terminated(parent_id, "KILLED")
        return len(runs)

    def close_orphans(self, parent_id: str) -> int:
        """After Tune ran a sweep to its end, a child still RUNNING (or KILLED by a stop)
        belongs to a trial Tune no longer knows: one that started after the sweep's last
        saved state when its driver was killed (SIGKILL), so the resume went on without
        it. It is KILLED with the reason (tag ``kdprune.orphaned``); the report counts it
        as killed, never as a result. Returns how many."""
        runs = [
            run
            for status in ("RUNNING", "KILLED")
            for run in self.client.search_runs(
                [self.experiment_id],
                f"tags.`{TAG_PARENT}` = '{parent_id}' AND attributes.status = '{status}'",
            )
        ]
        for run in runs:
            self.client.set_tag(
                run.info.run_id,
                TAG_ORPHANED,
                "its trial started after the sweep's last saved state and was lost with the "
                "killed driver; the resumed search went on without it",
            )
            self.client.set_terminated(run.info.run_id, "KILLED")
        return len(runs)

    def update_front(
        self, parent_id: str, objectives: tuple[str, ...], reference_point: tuple[float, ...]
    ) -> dict[str, Any]:
        """Rewrite the parent's pareto.csv, plots and hypervolume from its children."""
        from kdprune.analysis.loading import load_trials, state_counts
        from kdprune.analysis.tracking_front import log_front_to_parent

        df = load_trials(self.experiment, self.uri, parent_run_id=parent_id)
        done = df[df["state"] != "running"] if len(df) else df
        summary = log_front_to_parent(
            self.client, parent_id, done, objectives, reference_point or None, step=len(done)
        )
        counts = state_counts(df)
        for state in ("finished", "stopped_early", "failed"):
            self.client.log_metric(
                parent_id, f"trials_{state}", counts.get(state, 0), step=len(done)
            )
        return summary


class MlflowSweepCallback(Callback):
    """Tune callback mirroring trials into MLflow (see module docstring)."""

    def __init__(
        self,
        uri: str,
        experiment: str,
        run_name: str,
        parent_run_id: str,
        objectives: tuple[str, ...],
        reference_point: tuple[float, ...],
        manifests: dict[str, str] | None = None,
    ) -> None:
        self.uri, self.experiment, self.run_name = uri, experiment, run_name
        self.parent_run_id = parent_run_id
        self.objectives, self.reference_point = tuple(objectives), tuple(reference_point)
        self.manifests = dict(manifests or {})
        self._tracker: SweepTracker | None = None

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks with the experiment
        return {**self.__dict__, "_tracker": None}

    @property
    def tracker(self) -> SweepTracker:
        if self._tracker is None:
            self._tracker = SweepTracker(self.uri, self.experiment, self.run_name, self.manifests)
        return self._tracker

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        run_id, attempt = self.tracker.child_run(self.parent_run_id, trial.trial_id, trial.config)
        cfg = logged_params(trial.config)
        k = method_knob(cfg["method"])
        log(
            f"trial {trial.trial_id} started (attempt {attempt}): {cfg['method']}"
            + (f" {k}={cfg[k]:.3g}" if k else "")
            + f" kd_weight={cfg['kd_weight']} -> MLflow run {run_id}"
        )

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        log(f"trial {trial.trial_id} failed and will be retried: {self._error(trial)}")

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if result.get("final"):
            return  # logged by on_trial_complete
        run_id, _ = self._run(trial)
        self.tracker.log_rung(run_id, result)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._finish(trial, trial.last_result, "")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._finish(trial, trial.last_result, self._error(trial) or "trial errored")

    def _run(self, trial) -> tuple[str, int]:
        run_id = self.tracker._children.get(trial.trial_id)
        if run_id is None:
            return self.tracker.child_run(self.parent_run_id, trial.trial_id, trial.config)
        return run_id, 0

    def _finish(self, trial, result: dict[str, Any] | None, error: str) -> None:
        run_id, _ = self._run(trial)
        state = self.tracker.finish_child(run_id, result, error)
        msg = f"trial {trial.trial_id} {state}"
        if state == "finished":
            from kdprune.analysis.report import fmt_value

            msg += ": " + ", ".join(
                f"{METRIC_LABELS.get(o, o)} {fmt_value(o, (result or {}).get(o))}"
                for o in self.objectives
            )
        elif state == "failed":
            msg += f": {(error or (result or {}).get('failed') or '')[:300]}"
        log(msg)
        try:
            summary = self.tracker.update_front(
                self.parent_run_id, self.objectives, self.reference_point
            )
            log(
                f"front: {summary['front_size']} Pareto-optimal trial(s), hypervolume "
                f"{summary['hypervolume']:.4g}"
            )
        except Exception as exc:  # the front is re-derivable from the children; keep going
            log(f"could not update the Pareto front on the parent run: {exc!r}")

    @staticmethod
    def _error(trial) -> str:
        from kdprune.orchestration.worker import failure_reason

        try:
            err = trial.get_error()
        except Exception:  # the error file may be missing or unreadable
            err = None
        if isinstance(err, str):  # the error file's text: its innermost exception line
            lines = [ln.strip() for ln in err.splitlines() if "Error" in ln or "Exception" in ln]
            line = lines[-1] if lines else err.strip()
            return re.sub(r"^[\w.]+\.(\w+: )", r"\1", line)[:2000]  # TrialFailed: ...
        return failure_reason(err) if err is not None else ""
