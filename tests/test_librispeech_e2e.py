"""End to end on a LibriSpeech-layout corpus (issue 12 item 4): the user's own data goes
through the real CLI, in order, and reaches every place it should.

1. `kdprune data librispeech` imports the tree of tests/librispeech_corpus.py (FLAC,
   upper-case transcripts with apostrophes, two train subsets, a dev-other subset left out);
2. `kdprune finetune --preset tiny` trains a tiny teacher on the imported manifests;
3. `kdprune compress --preset tiny --teacher ...` compresses it on the same manifests: its
   final WER is over the imported test set (`num_utterances` = the manifest's lines);
4. (slow) `sweeps/l0_vs_lrf.py --smoke-test --trials 2` on them (an l0 and an LRF trial): the parent and every child MLflow run
   carry the `data` param and a tag with the manifests' paths, and every child's wer_test
   was computed over the imported test set.

No stage builds the preset's generated corpus along the way. Each stage is a child
process, as users run it; the stages share one work directory (module-scoped fixtures).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import psutil
import pytest
from conftest import PY, clean_env
from sweep_harness import finish, start_sweep, stop_trees, sweep_env, sweep_runs

from kdprune.contract import (
    ARTIFACT_UTTERANCES,
    PARAM_DATA,
    TAG_DATA_PATHS,
    TEST_UTTERANCES,
    UTT_ERRORS,
    UTT_ID,
    UTT_REF,
    UTT_WORDS,
    run_dir_of,
    utterances_file,
)
from kdprune.data.manifest import read_manifest
from kdprune.data.selection import data_digest
from kdprune.models.model_dir import load_model_dir

KDPRUNE = str(Path(PY).parent / "kdprune")
SPLITS = ("train", "dev", "test")


def run_cli(args: list[str], env: dict[str, str], timeout: float = 600) -> dict:
    """``kdprune <args>`` in a child process -> its last stdout line (one JSON object)."""
    r = subprocess.run(
        [KDPRUNE, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert r.returncode == 0, f"kdprune {args[0]} exited {r.returncode}:\n{r.stderr[-5000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def manifest_flags(manifests: dict[str, Path]) -> list[str]:
    return [a for s in SPLITS for a in (f"--{s}-manifest", str(manifests[s]))]


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def check_decoded_over(recs: list[dict], manifest: Path, wer: float) -> None:
    """The per-utterance records of a final evaluation cover exactly `manifest`'s
    utterances, and `wer` is their word errors / reference words."""
    utts = read_manifest(manifest, check_audio=False)
    assert sorted((r[UTT_ID], r[UTT_REF]) for r in recs) == sorted(
        (str(u.audio_filepath), u.text) for u in utts
    )
    errors, words = sum(r[UTT_ERRORS] for r in recs), sum(r[UTT_WORDS] for r in recs)
    assert wer == pytest.approx(errors / words)


def stop_strays(work: Path, grace_s: float = 60) -> None:
    """Stop what the sweep left running: processes whose KDPRUNE_WORKDIR is `work` (once
    seen: a Ray TrainController orphaned after the sweep's Ray shut down, on a busy core)."""

    def strays() -> list[psutil.Process]:
        found = []
        for p in psutil.process_iter():
            try:
                if p.environ().get("KDPRUNE_WORKDIR") == str(work):
                    found.append(p)
            except psutil.Error:  # gone, or not ours to read
                pass
        return found

    deadline = time.time() + grace_s
    while (left := strays()) and time.time() < deadline:
        time.sleep(2)
    if left:
        warnings.warn(
            f"sweep left {[(p.pid, p.name()) for p in left]} running: stopped", stacklevel=1
        )
        stop_trees(left)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("librispeech-e2e")


@pytest.fixture(scope="module")
def env(workdir) -> dict[str, str]:
    return clean_env(workdir, KDPRUNE_WORKDIR=str(workdir / "work"))


@pytest.fixture(scope="module")
def imported(librispeech_corpus, workdir, env) -> dict[str, Path]:
    out = run_cli(["data", "librispeech", "--root", str(librispeech_corpus.root)], env, 120)
    return {s: Path(p) for s, p in out["manifests"].items()}


@pytest.fixture(scope="module")
def teacher(imported, env) -> dict:
    args = ["finetune", "--preset", "tiny", "--max-steps", "40", *manifest_flags(imported)]
    return run_cli(args, env)


def no_generated_corpus(workdir: Path) -> None:
    """Only the import's manifests under work/data: no stage fell back to the tiny
    preset's generated corpus."""
    assert [p.name for p in (workdir / "work" / "data").iterdir()] == ["librispeech"]


def test_import_librispeech_layout(librispeech_corpus, imported, workdir):
    """The default output folder; train = both train-clean subsets, dev = dev-clean only,
    test = test-clean; lower-case text with its apostrophes; absolute FLAC paths;
    durations from the FLAC headers."""
    assert {s: p.parent for s, p in imported.items()} == {
        s: workdir / "work" / "data" / "librispeech" for s in SPLITS
    }
    top = librispeech_corpus.root / "LibriSpeech"
    for split in SPLITS:
        utts = read_manifest(imported[split])
        expected = librispeech_corpus.split(split)
        assert len(imported[split].read_text().splitlines()) == len(expected)
        assert sorted((u.audio_filepath.name, u.text) for u in utts) == sorted(
            (f"{i}.flac", text.lower()) for i, text in expected
        )
        assert all(u.audio_filepath.is_absolute() and top in u.audio_filepath.parents for u in utts)
        assert all(0.5 < u.duration < 6.0 for u in utts)
        assert any("'" in u.text for u in utts)  # apostrophes kept (DON'T -> don't)
    train_subsets = {
        u.audio_filepath.relative_to(top).parts[0] for u in read_manifest(imported["train"])
    }
    assert train_subsets == {"train-clean-100", "train-clean-360"}


def test_import_subset_flags(librispeech_corpus, env, tmp_path):
    """--<split>-subsets choose the subsets of a split (the others keep their defaults);
    a subset that is not there is one clear error, and nothing is written."""
    root = str(librispeech_corpus.root / "LibriSpeech")
    args = ["data", "librispeech", "--root", root, "--out", str(tmp_path / "m")]
    out = run_cli([*args, "--dev-subsets", "dev-clean", "dev-other"], env, 120)
    lines = {s: len(Path(p).read_text().splitlines()) for s, p in out["manifests"].items()}
    assert lines == {"train": 60, "dev": 12 + 3, "test": 12}
    bad = ["data", "librispeech", "--root", root, "--out", str(tmp_path / "bad")]
    r = subprocess.run(
        [KDPRUNE, *bad, "--train-subsets", "train-clean-100", "train-clean100"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert r.returncode == 2 and r.stdout == ""
    assert "['train-clean100'] not found under" in r.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "bad").exists()


def test_finetune_teacher_on_imported_manifests(imported, teacher, workdir):
    """The teacher, its tokenizer and its test WER come from the imported corpus."""
    m = load_model_dir(Path(teacher["model_dir"]))
    extra = json.loads((Path(teacher["model_dir"]) / "config.json").read_text())["extra"]
    assert extra["manifests"] == {s: str(imported[s]) for s in SPLITS}
    assert teacher["steps"] == 40 and 0.0 <= teacher["wer_test"]
    # The tokenizer was trained on these transcripts: every test sentence round-trips.
    for u in read_manifest(imported["test"], check_audio=False):
        assert m.tokenizer.decode(m.tokenizer.encode(u.text)) == u.text
    no_generated_corpus(workdir)


def test_compress_on_imported_manifests(imported, teacher, env, workdir):
    """`kdprune compress` on the given manifests: its final WER is over their test set."""
    args = ["compress", "--preset", "tiny", "--teacher", teacher["model_dir"]]
    args += ["--method", "l0", "--target-sparsity", "0.5", *manifest_flags(imported)]
    out = run_cli(args, env)
    test_lines = len(imported["test"].read_text().splitlines())
    assert out[TEST_UTTERANCES] == test_lines == 12
    run_dir = run_dir_of(out["model_dir"])
    for split in ("dev", "test"):
        recs = records(run_dir / utterances_file(split))
        check_decoded_over(recs, imported[split], out[f"wer_{split}"])
    no_generated_corpus(workdir)


@pytest.mark.slow
def test_smoke_sweep_on_imported_manifests(imported, teacher, workdir, tmp_path):
    """`sweeps/l0_vs_lrf.py --smoke-test --trials 2` on the given manifests: `data` param on the
    parent and every child (one value), the manifests' paths in a tag, and every child's
    wer_test over the imported test set (its per-utterance artefact)."""
    work = workdir / "sweep-work"
    env = sweep_env(work, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
    # The smoke test's first two trials (its l0 and LRF starting points): each is a Ray Train
    # job of a few CPU-minutes; the other two would add nothing about the data.
    args = ["--smoke-test", "--trials", "2", "--teacher", teacher["model_dir"], "--num-cpus", "2"]
    proc = start_sweep("l0_vs_lrf.py", [*args, *manifest_flags(imported)], env, tmp_path / "sweep")
    try:
        result = finish(proc, tmp_path / "sweep", 1800)  # minutes alone; a busy core slows Ray
    finally:
        stop_strays(work)
    client, parents, children = sweep_runs(result["tracking_uri"], result["experiment"])
    assert [p.info.run_id for p in parents] == [result["parent_run_id"]]
    assert sorted(c.data.params["method"] for c in children) == ["l0", "lrf"]
    for r in [*parents, *children]:
        assert r.data.params[PARAM_DATA] == data_digest(imported)
        assert json.loads(r.data.tags[TAG_DATA_PATHS]) == {s: str(imported[s]) for s in SPLITS}
    scored = [c for c in children if "wer_test" in c.data.metrics]
    assert scored, [c.info.status for c in children]
    for c in scored:
        got = client.download_artifacts(
            c.info.run_id, f"{ARTIFACT_UTTERANCES}/{utterances_file('test')}", tempfile.mkdtemp()
        )
        check_decoded_over(records(Path(got)), imported["test"], c.data.metrics["wer_test"])
    assert not (work / "data").exists()  # no generated corpus for the sweep either
