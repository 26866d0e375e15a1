"""Per-utterance results of a trial (``utterances/utterances_<split>.jsonl`` artefacts):
reading them from a file or from a run in MLflow, as {utterance id: (errors, words)}."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kdprune.contract import ARTIFACT_UTTERANCES, UTT_ERRORS, UTT_ID, UTT_WORDS, utterances_file

# Per-utterance results of one run on one split: {utterance id: (errors, reference words)}.
Utterances = dict[str, tuple[float, float]]
UtteranceLoader = Callable[[str, str], "Utterances | None"]  # (run id, split) -> or None


def read_utterances(path: str | Path) -> Utterances:
    """A per-utterance JSON Lines file -> {id: (errors, reference words)}."""
    out: Utterances = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            out[str(r[UTT_ID])] = (float(r[UTT_ERRORS]), float(r[UTT_WORDS]))
    return out


def mlflow_utterances(client: Any, cache_dir: str | Path) -> UtteranceLoader:
    """A loader reading a run's ``utterances/utterances_<split>.jsonl`` artefact (None
    when the run has none, e.g. a sweep from before they were logged)."""
    # one small file per run and split: MLflow's progress bar per download is noise
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    def load(run_id: str, split: str) -> Utterances | None:
        name = f"{ARTIFACT_UTTERANCES}/{utterances_file(split)}"
        dst = Path(cache_dir) / run_id
        dst.mkdir(parents=True, exist_ok=True)
        try:
            return read_utterances(client.download_artifacts(run_id, name, str(dst)))
        except Exception:  # MlflowException or OSError: no such artefact
            return None

    return load
