"""What a sweep's MLflow runs hold besides params and metrics, so the MLflow UI is where
runs are compared and any model is pulled from (DESIGN §3 "MLflow layout").

- the experiment: kind ``custom_model_development`` (the MLflow 3 UI then opens on its
  training runs, not the GenAI overview) and a description;
- the parent: a note saying how to compare its runs, and the corpus: dataset inputs, the
  param ``data`` (a short hash of the manifests' content) and the tag
  ``kdprune.data_paths`` (their paths);
- each child: the corpus as on the parent, its full compression config
  (``compress_config.json``), and when it finished its final metrics (``metrics.json``),
  per-utterance results (``utterances/utterances_{dev,test}.jsonl``) and the whole model
  directory (``model/``: ``mlflow.artifacts.download_artifacts("runs:/<id>/model")``).

Called by `kdprune.orchestration.tracking.SweepTracker` from the sweep driver; every name
comes from `kdprune.contract`.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kdprune.contract import (
    ARTIFACT_CONFIG,
    ARTIFACT_METRICS,
    ARTIFACT_MODEL,
    ARTIFACT_UTTERANCES,
    EVAL_SPLITS,
    EXPERIMENT_KIND,
    FINAL_METRICS,
    KNOBS,
    PARAM_DATA,
    ROLE_TRIAL,
    SWEEP_GRID,
    TAG_DATA_PATHS,
    TAG_EXPERIMENT_KIND,
    TAG_NOTE,
    TAG_ROLE,
    TAG_SHARED_VIEW,
    model_artifact_uri,
    registered_model_name,
    run_dir_of,
    ui_runs_path,
    utterances_file,
)
from kdprune.data.selection import data_digest, data_paths
from kdprune.utils import log

# The trials view's columns: the final metrics a comparison reads, the searched params.
VIEW_METRICS = ("wer_dev", "wer_test", "params", "encoder_params", "achieved_sparsity")
VIEW_PARAMS = ("method", "kd_weight", *KNOBS, "schedule", "streaming", "seed", PARAM_DATA)


def trials_view() -> dict[str, Any]:
    """The runs-table state of the trials view (MLflow UI shared-view JSON): children only,
    best dev WER first, dataset, metric and param columns."""
    cols = ["attributes.`Dataset`"]
    cols += [f"metrics.`{m}`" for m in VIEW_METRICS]
    cols += [f"params.`{p}`" for p in VIEW_PARAMS]
    return {
        "searchFilter": f"tags.`{TAG_ROLE}` = '{ROLE_TRIAL}'",
        "orderByKey": "metrics.`wer_dev`",
        "orderByAsc": True,
        "selectedColumns": cols,
    }


def set_experiment_kind(client: Any, experiment_id: str) -> None:
    """Mark the experiment as model training, keep the trials view on it, and describe it
    (idempotent; a description someone edited is kept)."""
    exp = client.get_experiment(experiment_id)
    if exp.tags.get(TAG_EXPERIMENT_KIND) != EXPERIMENT_KIND:
        client.set_experiment_tag(experiment_id, TAG_EXPERIMENT_KIND, EXPERIMENT_KIND)
    view = json.dumps(trials_view())
    if exp.tags.get(TAG_SHARED_VIEW) != view:
        client.set_experiment_tag(experiment_id, TAG_SHARED_VIEW, view)
    if TAG_NOTE not in exp.tags:
        client.set_experiment_tag(experiment_id, TAG_NOTE, experiment_note(exp))


def experiment_note(exp: Any) -> str:
    """The experiment's description (Markdown), shown above its runs."""
    return (
        f"kdprune sweep `{exp.name}`: one parent run per sweep run, one nested child run "
        "per trial (a compressed model). **All trials with their metrics, best first:** "
        f"[trials view]({ui_runs_path(exp.experiment_id)}) (or *Model training* at the top "
        "left, then expand a parent). Each parent's description says how to compare its "
        f"children; `kdprune report --experiment {exp.name}` writes the tables and plots."
    )


def parent_note(experiment: str, kind: str, experiment_id: str = "") -> str:
    """How to compare a sweep's runs (Markdown): the parent run's description."""
    metrics = ", ".join(f"`{m}`" for m in FINAL_METRICS)
    table = (
        "the method table (mean ± sd over seeds per row, and every ΔWER with a paired "
        "bootstrap 95 % interval over utterances, seeds pooled)"
        if kind == SWEEP_GRID
        else "the Pareto front, knee and per-method fronts"
    )
    return "\n".join(
        [
            f"**How to compare the runs of this {kind} sweep**",
            "",
            f"- All trials with their metrics, best dev WER first: [trials view]"
            f"({ui_runs_path(experiment_id)}). Or expand this run in the *Runs* table "
            "(*Model training* selected at the top left): one child per trial, named by its label "
            "and settings (`l0+KD s=0.5 kd=1 seed=0`: s target sparsity, r rank ratio, kd "
            "KD weight, seq sequential schedule, stream streaming).",
            f"- Columns: metrics {metrics}; params `method`, `kd_weight`, "
            "`target_sparsity`, `rank_ratio`, `schedule`, `streaming`, `seed` (*Columns* "
            "button). WER is a fraction; sort by `wer_dev` to select, read `wer_test`.",
            f"- The corpus: param `{PARAM_DATA}` (a short hash of the train/dev/test "
            f"manifests' content: equal values, the same data), their paths in the tag "
            f"`{TAG_DATA_PATHS}`, and the manifests as the run's dataset inputs.",
            "- Tick several children and press *Compare* for side-by-side params, metrics "
            "and training curves (`train/*`, `prune/*`, `eval/wer_dev`).",
            "- Each finished child holds `model/` (the whole model directory: "
            "`mlflow.artifacts.download_artifacts('runs:/<run_id>/model')`), "
            f"`{ARTIFACT_CONFIG}`, `{ARTIFACT_METRICS}` and "
            f"`{ARTIFACT_UTTERANCES}/` (per-utterance word errors on dev and test).",
            f"- This parent holds `pareto.csv` and the Pareto plots. For {table}: "
            f"`kdprune report --experiment {experiment}`; add `--register` to put the knee "
            f"model in the Model Registry as `{registered_model_name(experiment)}` "
            "(`--register front`: the whole front).",
        ]
    )


def corpus_datasets(manifests: Mapping[str, str | Path]) -> list[Any]:
    """One MLflow dataset input per split manifest (name ``<corpus folder> <split>``, the
    utterance table as its schema and profile, the manifest as its source), with the
    split as its context."""
    import mlflow.data
    import pandas as pd
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    inputs = []
    for split, path in manifests.items():
        path = Path(path)
        if not path.exists():
            continue
        df = pd.read_json(path, lines=True)
        with warnings.catch_warnings():  # a local path "can be interpreted in multiple ways"
            warnings.simplefilter("ignore", UserWarning)
            ds = mlflow.data.from_pandas(
                df, source=str(path.resolve()), name=f"{path.parent.name} {split}"
            )
        inputs.append(
            DatasetInput(ds._to_mlflow_entity(), [InputTag(MLFLOW_DATASET_CONTEXT, split)])
        )
    return inputs


def corpus_data(manifests: Mapping[str, str | Path]) -> dict[str, str]:
    """The corpus's param ``data`` (a short hash of the manifests' content: equal values,
    the same corpus) and tag ``kdprune.data_paths`` (their paths, JSON); {} without one."""
    if not manifests:
        return {}
    return {PARAM_DATA: data_digest(manifests), TAG_DATA_PATHS: data_paths(manifests)}


def log_corpus(
    client: Any, run_id: str, datasets: list[Any], data: Mapping[str, str] | None = None
) -> None:
    """Attach the corpus to a run: its datasets (MLflow deduplicates repeated inputs) and
    `corpus_data`'s param and tag."""
    from mlflow.entities import Param, RunTag

    if datasets:
        client.log_inputs(run_id, datasets=datasets)
    if data:
        params = [Param(PARAM_DATA, data[PARAM_DATA])]
        client.log_batch(run_id, params=params, tags=[RunTag(TAG_DATA_PATHS, data[TAG_DATA_PATHS])])


def log_trial_config(client: Any, run_id: str, config: Mapping[str, Any]) -> None:
    """The trial's full `CompressConfig` (defaults filled in) as ``compress_config.json``."""
    from kdprune.orchestration.space import compress_dict

    cfg = compress_dict(dict(config))
    try:
        from kdprune.compress import CompressConfig
        from kdprune.utils import from_dict, to_dict

        cfg = to_dict(from_dict(CompressConfig, cfg))
    except (TypeError, ValueError):  # an invalid config is recorded as given
        pass
    client.log_dict(run_id, cfg, ARTIFACT_CONFIG)


def log_trial_results(client: Any, run_id: str, result: Mapping[str, Any]) -> list[str]:
    """A finished trial's ``metrics.json``, per-utterance results and model directory, read
    from the trial's output folder (under the sweep's workdir, shared by every node of a
    cluster); returns the artefact paths logged. A missing folder is logged as such."""
    logged = []
    metrics = {
        k: v
        for k, v in result.items()
        if isinstance(v, (int, float, str, bool)) and (k in FINAL_METRICS or "/" not in k)
    }
    client.log_dict(run_id, metrics, ARTIFACT_METRICS)
    logged.append(ARTIFACT_METRICS)
    model_dir = result.get("model_dir")
    if not model_dir:
        return logged
    run_dir = run_dir_of(model_dir)
    for split in EVAL_SPLITS:
        path = run_dir / utterances_file(split)
        if path.exists():
            client.log_artifact(run_id, str(path), ARTIFACT_UTTERANCES)
            logged.append(f"{ARTIFACT_UTTERANCES}/{path.name}")
    if Path(model_dir).is_dir():
        client.log_artifacts(run_id, str(model_dir), ARTIFACT_MODEL)
        logged.append(ARTIFACT_MODEL)
    else:
        log(f"run {run_id}: model directory {model_dir} not readable here; not logged")
    return logged


def register_runs(
    tracking_uri: str, experiment: str, runs: list[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Each run's ``model/`` artefact as a new version of the registered model
    ``kdprune-<experiment>``, tagged with its label, settings and metrics. ``runs``:
    mappings with ``run_id`` and optionally ``label``, ``settings`` and final metrics."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    name = registered_model_name(experiment)
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(
            name, description=f"Compressed models of the kdprune sweep `{experiment}`."
        )
    out = []
    for run in runs:
        run_id = str(run["run_id"])
        files = {f.path for f in client.list_artifacts(run_id)}
        if ARTIFACT_MODEL not in files:
            raise ValueError(
                f"run {run_id} has no {ARTIFACT_MODEL}/ artefact to register (a sweep from "
                "before models were logged to MLflow?)"
            )
        tags = {
            k: run[k] if isinstance(run[k], str) else f"{float(run[k]):.6g}"
            for k in ("label", "settings", *VIEW_METRICS)
            if k in run and run[k] is not None and run[k] == run[k]
        }
        mv = client.create_model_version(name, model_artifact_uri(run_id), run_id=run_id, tags=tags)
        out.append({"name": name, "version": int(mv.version), "run_id": run_id, **tags})
        log(f"registered run {run_id} as {name} version {mv.version}")
    return out
