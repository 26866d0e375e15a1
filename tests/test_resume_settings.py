"""A resume runs the settings its sweep started with: flags that disagree with them, or a
teacher whose content changed since, are refused before Ray starts, with a message naming
each difference; the same flags (or none) resume. Real MLflow sqlite, the driver's own
`start_run` and CLI."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest
from fake_sweep import sweep_space
from fakes import synthetic_compress

from kdprune.orchestration.cli import build_parser, chosen_settings, main
from kdprune.orchestration.config import SweepConfig, changed_settings
from kdprune.orchestration.interrupt import resume_command
from kdprune.orchestration.tuner import SweepRun, start_run

REF = (1.0, 130000.0)  # the hypervolume reference: no teacher measurement needed


@pytest.fixture()
def started(tmp_path, monkeypatch) -> SweepConfig:
    """A sweep run started (its sweep.json and MLflow parent) with --preset tiny --steps 40."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("KDPRUNE_WORKDIR", str(tmp_path / "work"))
    cfg = SweepConfig(
        name="l0_vs_lrf", space=sweep_space(), preset="tiny", steps=40, reference_point=REF
    )
    start_run(cfg.resolved(), resume=False, prepare=False)
    return cfg


def test_changed_settings_names_each_difference():
    a = SweepConfig(name="s", steps=40, seed=0)
    b = replace(a, steps=80, seed=1)
    assert changed_settings(a, b) == [
        "seed: 0 when started, 1 now",
        "steps: 40 when started, 80 now",
    ]
    assert changed_settings(a, b, {"preset"}) == []


def test_chosen_settings_are_the_flags_given():
    p = build_parser(None)
    base = SweepConfig(name="s", space=sweep_space())
    smoke = {"preset": "tiny", "trials": 4}
    assert chosen_settings(p.parse_args(["--resume"]), p, base, smoke) == set()
    assert chosen_settings(p.parse_args(["--steps", "80"]), p, base, smoke) == {"steps"}
    assert chosen_settings(p.parse_args(["--smoke-test"]), p, base, smoke) == {"preset", "trials"}


def test_resume_with_other_flags_is_refused(started, capsys):
    argv = ["--preset", "tiny", "--steps", "80", "--seed", "3", "--resume"]
    assert main(None, "l0_vs_lrf", sweep_space(), argv, trainer=synthetic_compress) == 2
    err = capsys.readouterr().err
    assert "steps: 40 when started, 80 now" in err and "seed: 0 when started, 3 now" in err
    assert "preset" not in err.split("other settings")[1]  # the same: not named


def test_resume_with_the_same_or_no_flags_is_accepted(started):
    run, _, _ = start_run(started.resolved(), resume=True, prepare=False)  # every field
    assert run.config == started.resolved()
    bare = SweepConfig(name="l0_vs_lrf", space=sweep_space())  # `--resume` with no flags
    again, _, _ = start_run(bare.resolved(), resume=True, prepare=False, settings=set())
    assert again.run_name == run.run_name and again.config.steps == 40


def test_resume_with_a_changed_teacher_is_refused(tmp_path, monkeypatch, tiny_teacher):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_teacher["model_dir"], teacher)
    cfg = SweepConfig(
        name="s",
        preset="tiny",
        workdir=str(tmp_path / "w"),
        teacher_dir=str(teacher),
        reference_point=REF,
    )
    run, _, _ = start_run(cfg.resolved(), resume=False, prepare=False)
    assert SweepRun.load(run.state_dir).teacher_digest
    (teacher / "config.json").write_text((teacher / "config.json").read_text() + " ")
    with pytest.raises(ValueError, match="another teacher"):
        start_run(cfg.resolved(), resume=True, prepare=False)


def test_resume_command_replaces_any_resume_flag():
    cmd = ["py", "sweeps/x.py", "--smoke-test", "--resume", "old", "--steps", "4"]
    assert resume_command(cmd, "x-1") == "py sweeps/x.py --smoke-test --steps 4 --resume x-1"
    assert resume_command(["py", "s.py", "--resume"], "x-1") == "py s.py --resume x-1"
    assert resume_command(["py", "s.py", "--resume=a b"], "x-1") == "py s.py --resume x-1"
