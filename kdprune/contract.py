"""The names every layer agrees on (DESIGN §3): presets, methods and schedules, the searched
params and their types, the metric names, the sweep objectives, the MLflow tags, and where
MLflow tracks and keeps artefacts.

This module owns these names; every other module imports them from here instead of
spelling them again (tests/test_contract.py greps the source for copies). It imports
nothing heavier than the standard library, so the CLI, the sweep driver, the analysis
notebooks and Ray workers can all read it cheaply.
"""

from __future__ import annotations

import os
from pathlib import Path

from kdprune.utils import default_workdir

# -- presets and methods -------------------------------------------------------------------
PRESETS = ("tiny", "demo", "paper", "paper-ssl-large")  # tests | the README main job on 2 cores
# | LibriSpeech scale | LibriSpeech scale from an imported 600M-class SSL conformer
METHODS = ("l0", "lrf", "small", "none")  # HardConcrete gates | low-rank | smaller student | dense
SCHEDULES = ("joint", "sequential")  # prune while training RNN-T + KD | prune + KD, then RNN-T
# The one knob each method searches; a method absent here (none) searches neither. The
# knobs of the other methods are logged as None, so a front never shows an unused knob.
METHOD_KNOB = {"l0": "target_sparsity", "small": "target_sparsity", "lrf": "rank_ratio"}
KNOBS = ("target_sparsity", "rank_ratio")
# The methods that compress the teacher itself (the paper's comparison); small and none
# are the baselines.
COMPRESSING_METHODS = ("l0", "lrf")
# How a method reads in tables and plots; "+KD" is appended when kd_weight > 0.
METHOD_LABELS = {"l0": "l0", "lrf": "LRF", "small": "small", "none": "dense"}


def method_knob(method: object) -> str | None:
    """The param ``method`` searches (``target_sparsity`` for l0/small, ``rank_ratio`` for
    lrf), or None."""
    return METHOD_KNOB.get(str(method))


# -- params --------------------------------------------------------------------------------
# The params of a trial's MLflow run (DESIGN §3), with their types: MLflow stores every
# param as a string, and the loader types them back with this map. ``chunk_size`` is
# logged for streaming trials only.
PARAM_TYPES: dict[str, str] = {
    "method": "str",
    "kd_weight": "float",
    "target_sparsity": "float",
    "rank_ratio": "float",
    "schedule": "str",
    "streaming": "bool",
    "chunk_size": "int",
    "seed": "int",
    "preset": "str",
}
PARAMS = tuple(PARAM_TYPES)

# -- the corpus a run uses -----------------------------------------------------------------
# A run trains and evaluates on the preset's generated corpus, or on three manifests the
# user names, one per split: the flags ``--train-manifest/--dev-manifest/--test-manifest``
# and the config fields ``train_manifest/dev_manifest/test_manifest`` ("": the preset's).
# A sweep's parent and every child carry the param PARAM_DATA, a short hash of the three
# manifests' content (equal values: the same corpus), and their paths in TAG_DATA_PATHS.
PARAM_DATA = "data"
TAG_DATA_PATHS = "kdprune.data_paths"  # JSON {"train": path, "dev": path, "test": path}
# A compression run's final metric: how many test utterances its ``wer_test`` decoded.
TEST_UTTERANCES = "num_utterances"


def manifest_field(split: str) -> str:
    """The config field (and, dashed, the CLI flag) naming a split's manifest:
    ``train_manifest`` / ``--train-manifest``."""
    return f"{split}_manifest"


def manifest_selection(
    train: str | Path | None, dev: str | Path | None, test: str | Path | None
) -> dict[str, Path] | None:
    """The user's corpus from the three manifest flags or fields: all three as
    ``{"train", "dev", "test"}`` paths, or None (the preset's generated corpus) when none
    is given; a ValueError naming the missing flags when only some are."""
    given = {"train": train, "dev": dev, "test": test}
    if not any(given.values()):
        return None
    missing = [f"--{manifest_field(s).replace('_', '-')}" for s, v in given.items() if not v]
    if missing:
        raise ValueError(
            "give all three manifests (--train-manifest, --dev-manifest, --test-manifest) "
            f"or none (the preset's generated corpus); missing: {', '.join(missing)}"
        )
    return {s: Path(v) for s, v in given.items()}


# -- metrics -------------------------------------------------------------------------------
LATENCY = "latency_ms_per_audio_s"  # mean wall-clock ms per second of audio, batch 1
# What `compress` returns and a finished trial's run carries (plain names, DESIGN §3),
# each with its label in tables and plots.
METRIC_LABELS = {
    "wer_dev": "WER (dev)",
    "wer_test": "WER (test)",
    "params": "parameters",
    "encoder_params": "encoder parameters",
    "params_ratio": "parameters ÷ teacher",
    LATENCY: "latency (ms per s of audio)",
    "rtf": "real-time factor",
    "achieved_sparsity": "sparsity",
}
FINAL_METRICS = tuple(METRIC_LABELS)
# How they read: fractions shown in %, parameter counts in k/M.
PERCENT_METRICS = ("wer_dev", "wer_test", "params_ratio", "achieved_sparsity")
COUNT_METRICS = ("params", "encoder_params")
# Final metrics a sweep may optimise (every one minimised), and the CLI's aliases.
OBJECTIVES = ("wer_dev", "params", LATENCY, "encoder_params", "params_ratio", "rtf")
OBJECTIVE_ALIASES = {"latency": LATENCY, "wer": "wer_dev"}
DEFAULT_OBJECTIVES = ("wer_dev", "params")
# A trial's report at a rung (an evaluation step): these keys, renamed into namespaces in
# MLflow; keys that already hold a "/" (per-step ``train/...``, ``prune/...``) keep theirs.
RUNG_METRICS = {
    "wer_dev": "eval/wer_dev",
    "expected_params": "prune/expected_params",
    "expected_sparsity": "prune/expected_sparsity",
    "eval_params": "prune/eval_params",
}
# Where an l0 trial is headed at a rung (its target size); early stopping ranks on it.
BUDGET_PARAMS = "budget_params"
# The points early stopping ranks trials on at a rung (both minimised).
RUNG_OBJECTIVES = ("wer_dev", "expected_params")
# Per-step training metrics are namespaced; a bare key of the training loop (``lr``,
# ``grad_norm``) goes under this one.
TRAIN_NAMESPACE = "train"

# -- MLflow tags ---------------------------------------------------------------------------
TAG_ROLE = "kdprune.role"  # ROLE_SWEEP on a sweep's parent run, ROLE_TRIAL on its children
ROLE_SWEEP, ROLE_TRIAL = "sweep", "trial"
TAG_PARENT = "mlflow.parentRunId"  # MLflow's own nesting tag
TAG_TRIAL_ID = "kdprune.trial_id"  # the Ray Tune trial id: a retried trial reuses its run
TAG_ATTEMPT = "kdprune.attempt"  # how many times the trial started
TAG_SWEEP_RUN = "kdprune.sweep_run"  # the sweep run's name, on its parent
TAG_STOPPED_EARLY = "kdprune.stopped_early"  # "true" / "false" on a closed child
TAG_STOPPED_AT_STEP = "kdprune.stopped_at_step"
TAG_FAILURE_REASON = "kdprune.failure_reason"
TAG_ORPHANED = "kdprune.orphaned"  # why a child closed by the driver never ran to an end
TAG_MODEL_DIR = "kdprune.model_dir"  # the finished trial's model directory
TAG_SYNTHETIC = "kdprune.synthetic"  # "true" on made-up runs (test fakes): never results
TAG_SWEEP_KIND = "kdprune.sweep_kind"  # on a parent: SWEEP_GRID (fixed grid) or SWEEP_SEARCH
SWEEP_GRID, SWEEP_SEARCH = "grid", "search"
# MLflow's own tags: the experiment kind makes the MLflow 3 UI open an experiment on its
# training runs (not the GenAI overview); the note is a run's or experiment's description.
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
TAG_NOTE = "mlflow.note.content"
# The MLflow 3.17 UI ignores the kind for its landing page: a browser-wide "GenAI / Model
# training" switch decides (GenAI until switched). This query on an experiment's URL
# opens it on its runs (#/experiments/<id>/runs?workflowType=machine_learning).
UI_WORKFLOW_QUERY = "workflowType=machine_learning"
# A view of the runs table kept on the experiment (MLflow's "shared view"): the trials,
# sorted by dev WER, with the final metrics and searched params as columns.
TAG_SHARED_VIEW = "mlflow.sharedViewState.kdprune-trials"

# -- what a trial's run holds as artefacts -------------------------------------------------
ARTIFACT_MODEL = "model"  # the whole model directory (DESIGN §3), loadable as downloaded
ARTIFACT_CONFIG = "compress_config.json"  # the trial's full CompressConfig
ARTIFACT_METRICS = "metrics.json"  # the final metrics, as `compress` returned them
ARTIFACT_UTTERANCES = "utterances"  # folder: one UTTERANCES_FILE per evaluation split
EVAL_SPLITS = ("dev", "test")  # the splits a final evaluation decodes
# One JSON line per utterance of a final evaluation: the audio path (the utterance's id:
# runs are paired on it), reference, hypothesis, word errors and reference words.
UTT_ID, UTT_REF, UTT_HYP = "audio_filepath", "reference", "hypothesis"
UTT_ERRORS, UTT_WORDS = "errors", "ref_words"


def utterances_file(split: str) -> str:
    """File name of a split's per-utterance results (``utterances_dev.jsonl``)."""
    return f"utterances_{split}.jsonl"


def run_dir_of(model_dir: str | Path) -> Path:
    """The compression run's folder (metrics.json, the utterance files) of its model dir."""
    return Path(model_dir).parent


def ui_runs_path(experiment_id: str) -> str:
    """The MLflow UI path (after ``http://HOST:PORT/``) of an experiment's trials view."""
    key = TAG_SHARED_VIEW.rsplit(".", 1)[1]
    return f"#/experiments/{experiment_id}/runs?{UI_WORKFLOW_QUERY}&viewStateShareKey={key}"


def model_artifact_uri(run_id: str) -> str:
    """Where a trial run keeps its model directory: ``runs:/<id>/model``, for
    ``mlflow.artifacts.download_artifacts`` and the Model Registry."""
    return f"runs:/{run_id}/{ARTIFACT_MODEL}"


def registered_model_name(experiment: str) -> str:
    """The Model Registry entry `kdprune report --register` fills for a sweep."""
    return f"kdprune-{experiment}"


# -- where MLflow tracks -------------------------------------------------------------------
def resolve_tracking_uri(
    tracking_uri: str | None = None, *, workdir: str | Path | None = None
) -> str:
    """The MLflow tracking URI: ``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else the
    local store ``sqlite:///<workdir>/mlflow.db`` (``workdir`` defaulting to
    ``$KDPRUNE_WORKDIR`` or ``./work``). A local store (sqlite file, ``file:`` URI or plain
    path) is made absolute: Ray changes the working directory of every process it starts,
    and a notebook's directory is not the sweep's."""
    uri = (
        tracking_uri
        or os.environ.get("MLFLOW_TRACKING_URI")
        or f"sqlite:///{Path(workdir or default_workdir()) / 'mlflow.db'}"
    )
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///") :]
        if path != ":memory:" and not Path(path).is_absolute():
            uri = f"sqlite:///{Path(path).resolve()}"
    elif uri.startswith("file:") or "://" not in uri:
        path = uri[len("file:") :].lstrip("/") if uri.startswith("file:") else uri
        path = "/" + path if uri.startswith("file:///") else path
        uri = Path(path).resolve().as_uri()
    return uri


def artifact_location(tracking_uri: str) -> str | None:
    """Where a new experiment keeps its artefacts: ``mlartifacts/`` beside a sqlite store
    (MLflow would default to the current directory); None (MLflow's default) otherwise."""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri[len("sqlite:///") :]).parent / "mlartifacts").as_uri()
    return None
