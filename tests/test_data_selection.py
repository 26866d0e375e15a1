"""The user's corpus (issue 12 items 1 and 5): the manifest flags reach the configs and
every cache key; `compress` trains and evaluates on them (its ``wer_test`` over every line
of the test manifest, rungs and ``wer_dev`` on the dev manifest, mixed sample rates
resampled); bad input costs one clear error before a teacher, MLflow or Ray, and leaves
nothing behind.

The corpora are cut from the tiny generated corpus (real TTS audio) into manifests of
their own, with absolute audio paths, as a user's would be.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fakes import synthetic_compress

from kdprune import cli
from kdprune.compress import CompressConfig
from kdprune.compress.config import run_key
from kdprune.contract import PARAM_DATA, TEST_UTTERANCES, manifest_selection
from kdprune.data.audio import load_audio, resample
from kdprune.data.manifest import Utterance, read_manifest, write_manifest
from kdprune.data.selection import (
    DataError,
    check_coverage,
    check_manifests,
    data_digest,
    manifest_fields,
)
from kdprune.orchestration import cli as sweep_cli
from kdprune.orchestration.config import SpaceConfig, SweepConfig, check_inputs
from kdprune.orchestration.space import SearchSpace, grid_configs

SIZES = {"train": 12, "dev": 5, "test": 7}


def cut_corpus(folder: Path, tiny_manifests: dict[str, Path], **texts: str) -> dict[str, Path]:
    """The first SIZES[split] utterances of each tiny split as a manifest in ``folder``;
    ``texts``: a split whose transcripts are all replaced by this text."""
    out = {}
    for split, n in SIZES.items():
        utts = read_manifest(tiny_manifests[split])[:n]
        if split in texts:
            utts = [replace(u, text=texts[split]) for u in utts]
        out[split] = write_manifest(folder / f"{split}.jsonl", utts, absolute=True)
    return out


def manifest_flags(manifests: dict[str, Path]) -> list[str]:
    return [a for s, p in manifests.items() for a in (f"--{s}-manifest", str(p))]


@pytest.fixture()
def corpus(tmp_path, tiny_manifests) -> dict[str, Path]:
    return cut_corpus(tmp_path / "corpus", tiny_manifests)


def add_other_rates(train: Path) -> list[Utterance]:
    """Append the first two train utterances again, at 44.1 kHz stereo and at 8 kHz (FLAC);
    returns the two originals."""
    utts = read_manifest(train)
    extra = []
    for u, sr, channels in ((utts[0], 44100, 2), (utts[1], 8000, 1)):
        wave = resample(load_audio(u.audio_filepath), 16000, sr)
        path = train.parent / f"{u.audio_filepath.stem}-{sr}.flac"
        sf.write(path, np.stack([wave] * channels, axis=1), sr)
        extra.append(Utterance(audio_filepath=path, duration=u.duration, text=u.text))
    write_manifest(train, utts + extra, absolute=True)
    return utts[:2]


# -- flags, configs and keys -------------------------------------------------------------------
def test_three_manifests_or_none():
    assert manifest_selection(None, "", None) is None
    assert manifest_selection("a", "b", "c") == {"train": Path("a"), "dev": Path("b"),
                                                 "test": Path("c")}  # fmt: skip
    with pytest.raises(ValueError, match="missing: --dev-manifest, --test-manifest"):
        manifest_selection("a", None, None)
    with pytest.raises(ValueError, match="missing: --train-manifest"):
        CompressConfig(dev_manifest="b", test_manifest="c").manifests  # noqa: B018
    with pytest.raises(ValueError, match="missing: --test-manifest"):
        SweepConfig(name="s", train_manifest="a", dev_manifest="b").check()


def test_flags_reach_the_sweep_config_and_every_trial_config(corpus, tmp_path):
    args = sweep_cli.build_parser(None).parse_args(
        ["--workdir", str(tmp_path), *manifest_flags(corpus)]
    )
    cfg = sweep_cli.config_from_args(args, SweepConfig(name="s"), {})
    assert cfg.manifests == corpus  # absolute paths
    check_inputs(cfg)
    fields = manifest_fields(corpus)
    space = SearchSpace(SpaceConfig(), "tiny", corpus=fields)
    import optuna

    trial = optuna.create_study().ask()
    const = space(trial)
    trial_cfg = CompressConfig(**{**trial.params, **const, "steps": 4})
    assert trial_cfg.manifests == corpus
    grid = grid_configs(replace(cfg, grid=({"method": "l0"}, {"method": "lrf"})))
    assert all(CompressConfig(**g).manifests == corpus for g in grid)


def test_the_run_key_follows_the_manifests_content(corpus, tmp_path):
    base = CompressConfig(preset="tiny", method="lrf", steps=4)
    # A run on the preset's corpus keeps the hash it had before the manifest fields.
    assert run_key(base, "/teacher") == "ccd8be8a76"
    cfg = replace(base, **manifest_fields(corpus))
    key = run_key(cfg, "/teacher")
    assert key != run_key(base, "/teacher")
    assert run_key(cfg, "/teacher") == key  # stable
    digest = data_digest(corpus)
    lines = corpus["test"].read_text().splitlines()
    corpus["test"].write_text("\n".join(lines[:-1]) + "\n")  # the user edits the test set
    assert run_key(cfg, "/teacher") != key
    assert data_digest(corpus) != digest
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    copy = {s: Path(moved / p.name) for s, p in corpus.items()}
    for s, p in corpus.items():
        copy[s].write_bytes(p.read_bytes())
    assert data_digest(copy) == data_digest(corpus)  # the param: content only
    assert run_key(replace(base, **manifest_fields(copy)), "/teacher") != run_key(cfg, "/teacher")


# -- compress on the user's corpus ---------------------------------------------------------------
def test_compress_trains_and_evaluates_on_the_given_manifests(
    corpus, tiny_teacher, tmp_path, capsys
):
    add_other_rates(corpus["train"])  # mixed sample rates in training
    out, work = tmp_path / "run", tmp_path / "work"
    argv = ["compress", "--preset", "tiny", "--method", "l0", "--steps", "4"]
    argv += ["--teacher", tiny_teacher["model_dir"], "--out", str(out), "--workdir", str(work)]
    assert cli.main([*argv, *manifest_flags(corpus)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    test_lines = corpus["test"].read_text().splitlines()
    assert result[TEST_UTTERANCES] == len(test_lines) == SIZES["test"]
    for split in ("dev", "test"):  # every decoded utterance is one of the given manifest's
        given = [str(u.audio_filepath) for u in read_manifest(corpus[split])]
        decoded = (out / f"utterances_{split}.jsonl").read_text().splitlines()
        assert [json.loads(r)["audio_filepath"] for r in decoded] == given
    extra_cfg = json.loads((out / "model" / "config.json").read_text())["extra"]
    assert extra_cfg["compress"]["test_manifest"] == str(corpus["test"])
    assert extra_cfg[PARAM_DATA] == data_digest(corpus)
    assert not (work / "data").exists()  # the preset's corpus was never generated


def test_training_features_resample_and_rungs_decode_the_dev_manifest(
    corpus, tiny_teacher, tmp_path
):
    from kdprune.prepare import prepare

    originals = add_other_rates(corpus["train"])
    data = prepare("tiny", tmp_path / "work", teacher=tiny_teacher["model_dir"], manifests=corpus)
    # The 44.1 kHz and 8 kHz copies give the 16 kHz originals' frame counts (± the last
    # frame of resampling), not 2.76x and 0.5x as many: their audio was resampled.
    frames = data.train.num_frames
    for i, copy in zip((0, 1), (-2, -1), strict=True):
        assert data.train.utts[copy].text == originals[i].text
        assert abs(frames[copy] - frames[i]) <= 1, (frames[copy], frames[i])
    dev = [u.audio_filepath for u in read_manifest(corpus["dev"])]
    assert [u.audio_filepath for u in data.dev_rung.utts] == dev[: len(data.dev_rung.utts)]
    assert len(data.test.utts) == SIZES["test"]


# -- bad input: one error before a teacher, MLflow or Ray ----------------------------------------
def _bad(case: str, corpus: dict[str, Path]) -> tuple[list[str], str]:
    """(manifest flags, the error's words) of a bad-input case."""
    if case == "partial":
        return ["--train-manifest", str(corpus["train"])], "missing: --dev-manifest"
    if case == "missing":
        corpus["dev"].unlink()
        return manifest_flags(corpus), f"--dev-manifest {corpus['dev']}: no such file"
    if case == "empty":
        corpus["test"].write_text("\n")
        return manifest_flags(corpus), "manifest is empty"
    if case == "audio":
        lines = corpus["dev"].read_text().splitlines()
        rec = json.loads(lines[2])
        gone = str(Path(rec["audio_filepath"]).with_name("gone.wav"))
        lines[2] = json.dumps({**rec, "audio_filepath": gone})
        corpus["dev"].write_text("\n".join(lines) + "\n")
        return manifest_flags(corpus), f"dev.jsonl:3: audio file not found: {gone}"
    raise AssertionError(case)


CASES = ("partial", "missing", "empty", "audio")


def _nothing_written(work: Path) -> None:
    left = sorted(p.name for p in work.iterdir()) if work.exists() else []
    assert left == [], left


@pytest.mark.parametrize("case", CASES)
def test_a_sweep_refuses_bad_input_before_ray(case, corpus, tmp_path, capsys, monkeypatch):
    import ray

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    flags, words = _bad(case, corpus)
    work = tmp_path / "work"
    argv = ["--smoke-test", "--workdir", str(work), *flags]
    rc = sweep_cli.main(None, "bad", SpaceConfig(), argv, trainer=synthetic_compress)
    err = capsys.readouterr().err
    assert rc == 2 and words in err, err
    assert len([ln for ln in err.splitlines() if "error" in ln]) == 1
    assert not ray.is_initialized()
    _nothing_written(work)  # no sweep state, no MLflow store, no Ray results


@pytest.mark.parametrize("case", CASES)
def test_compress_refuses_bad_input_before_anything(case, corpus, tmp_path, capsys):
    flags, words = _bad(case, corpus)
    work = tmp_path / "work"
    argv = ["compress", "--preset", "tiny", "--steps", "4", "--workdir", str(work), *flags]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("error:") == 1, err
    _nothing_written(work)  # no teacher, tokenizer, features or run folder


def test_one_file_for_every_split_is_allowed_with_a_warning(corpus, capsys):
    same = {s: corpus["train"] for s in corpus}
    summaries = check_manifests(same)
    assert summaries["test"].utterances == SIZES["train"]
    err = capsys.readouterr().err
    assert "warning: the train and test manifests are the same file" in err
    check_inputs(SweepConfig(name="s", **manifest_fields(same)))  # no error


# -- a teacher whose tokenizer cannot write the corpus ------------------------------------------
def test_a_teacher_that_cannot_encode_the_transcripts_is_refused(
    tiny_teacher, tiny_manifests, tmp_path, capsys, monkeypatch
):
    import ray

    teacher = tiny_teacher["model_dir"]
    clean = cut_corpus(tmp_path / "clean", tiny_manifests)
    assert check_coverage(teacher, clean).rate == 0.0  # the corpus it was trained on
    # Transcripts in another script: every word is an unknown piece after the "▁".
    foreign = cut_corpus(tmp_path / "foreign", tiny_manifests, test="привет мир привет")
    with pytest.raises(DataError) as err:
        check_coverage(teacher, foreign)
    assert "'привет'" in str(err.value)
    # each foreign word is two tokens, one unknown: at most half of all tokens
    rate = float(str(err.value).split("% of their tokens")[0].rsplit(" ", 1)[1])
    assert 1.0 < rate < 50.0

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    work = tmp_path / "work"
    argv = ["--smoke-test", "--workdir", str(work), "--teacher", teacher, *manifest_flags(foreign)]
    assert sweep_cli.main(None, "bad", SpaceConfig(), argv, trainer=synthetic_compress) == 2
    assert "cannot encode these transcripts" in capsys.readouterr().err
    assert not ray.is_initialized()
    _nothing_written(work)
    argv = ["compress", "--preset", "tiny", "--teacher", teacher, "--workdir", str(work)]
    assert cli.main([*argv, *manifest_flags(foreign)]) == 2
    assert "'привет'" in capsys.readouterr().err
    _nothing_written(work)
