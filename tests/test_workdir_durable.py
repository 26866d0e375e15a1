"""A job sent with `ray job submit --working-dir` runs in Ray's temporary package copy; the
default work directory (corpus, models, MLflow store) must never land there."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sweep_harness import REPO

from kdprune.utils import EphemeralWorkdirError, default_workdir


@pytest.fixture()
def ray_package_dir(tmp_path, monkeypatch):
    pkg = tmp_path / "session_2026" / "runtime_resources" / "working_dir_files" / "_ray_pkg_1"
    pkg.mkdir(parents=True)
    monkeypatch.chdir(pkg)
    monkeypatch.delenv("KDPRUNE_WORKDIR", raising=False)
    return pkg


def test_default_workdir_in_a_ray_package_is_refused(ray_package_dir, monkeypatch):
    with pytest.raises(EphemeralWorkdirError, match="KDPRUNE_WORKDIR"):
        default_workdir()
    monkeypatch.setenv("KDPRUNE_WORKDIR", str(ray_package_dir.parents[3] / "work"))
    assert default_workdir() == ray_package_dir.parents[3] / "work"


def test_a_sweep_started_there_stops_with_one_line_and_writes_nothing(ray_package_dir):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KDPRUNE_", "MLFLOW_"))}
    proc = subprocess.run(
        [sys.executable, str(REPO / "sweeps" / "l0_vs_lrf.py"), "--smoke-test"],
        cwd=ray_package_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1 and "KDPRUNE_WORKDIR" in errors[0], proc.stderr[-2000:]
    assert list(ray_package_dir.iterdir()) == []  # no work/, no mlflow.db
