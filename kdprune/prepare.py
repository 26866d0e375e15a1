"""One preparation for everything that compresses, or measures against, a teacher.

`prepare(preset, workdir)` returns the teacher (the given model directory, or the preset's,
trained and cached by `kdprune.pipeline`), its tokenizer, and the feature sets of the
corpus (the preset's generated corpus unless `manifests` names others), with features
computed by the teacher's front end and cached under ``<workdir>/features``. A compression
run, the sweep driver, the search benchmark and the method table all start here, so they
train and measure on the same data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from kdprune.data.features import FeatureSet, load_features
from kdprune.data.synth_config import SPLITS
from kdprune.data.tokenizer import Tokenizer
from kdprune.device import resolve_device
from kdprune.models.model_dir import LoadedModel, load_model_dir
from kdprune.pipeline import finetune, resolve_manifests

RUNG_UTTS = 100  # dev utterances decoded at each rung (the evaluations during training)


@dataclass(frozen=True, kw_only=True)
class Prepared:
    """A teacher and the data a run trains and evaluates on."""

    teacher: LoadedModel  # loaded, on the requested device
    teacher_dir: Path
    tokenizer: Tokenizer  # the teacher's (students share it)
    manifests: dict[str, Path]  # "train", "dev", "test"
    train: FeatureSet
    dev: FeatureSet
    dev_rung: FeatureSet  # the first RUNG_UTTS dev utterances
    test: FeatureSet


def teacher_dir_of(
    preset: str,
    workdir: Path,
    teacher: Path | str | None = None,
    manifests: dict[str, Path] | None = None,
    device: str | torch.device = "auto",
) -> Path:
    """The given teacher directory as given, or the preset's (built on first use, on
    `device`)."""
    if teacher:
        return Path(teacher)
    return Path(finetune(preset, Path(workdir), manifests, device=device)["model_dir"])


def prepare(
    preset: str,
    workdir: Path,
    teacher: Path | str | None = None,
    manifests: dict[str, Path] | None = None,
    device: str | torch.device = "auto",
) -> Prepared:
    """The teacher, its tokenizer and the train/dev/rung/test feature sets.

    `manifests`: {"train", "dev", "test"} manifest paths; None: the preset's generated
    corpus (synthesised on first use).
    """
    workdir = Path(workdir).resolve()
    device = resolve_device(device)  # "auto": CUDA when available
    teacher_dir = teacher_dir_of(preset, workdir, teacher, manifests, device)
    loaded = load_model_dir(teacher_dir, device)
    manifests = resolve_manifests(preset, workdir, manifests)
    fcfg = loaded.config.features
    sets = {s: load_features(manifests[s], fcfg, workdir / "features") for s in SPLITS}
    dev = sets["dev"]
    return Prepared(
        teacher=loaded,
        teacher_dir=teacher_dir,
        tokenizer=loaded.tokenizer,
        manifests=manifests,
        train=sets["train"],
        dev=dev,
        dev_rung=dev.head(RUNG_UTTS),
        test=sets["test"],
    )
