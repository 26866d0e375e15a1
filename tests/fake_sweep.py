"""A sweep script's sweep with a fake trainer (tests/fakes.py) in place of `compress`, for
the end-to-end tests of the orchestration (faults, resume, node churn, memory): the same
`kdprune.orchestration.cli.main` as ``sweeps/*.py``, through its ``trainer`` argument.

Usage:
    .venv/bin/python tests/fake_sweep.py synthetic --preset tiny --reference-point 1.0,130000
    .venv/bin/python tests/fake_sweep.py data ...    # reads $KDPRUNE_TEST_MANIFEST
Every other flag is the sweep script's (sweeps/l0_vs_lrf.py, its search space).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from fakes import data_compress, synthetic_compress  # by name, as the Ray workers import it

from kdprune.orchestration.cli import main

TRAINERS = {"synthetic": synthetic_compress, "data": data_compress}
SCRIPT = Path(__file__).resolve().parents[1] / "sweeps" / "l0_vs_lrf.py"


def sweep_space():
    spec = importlib.util.spec_from_file_location("l0_vs_lrf", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SPACE


if __name__ == "__main__":
    trainer = TRAINERS[sys.argv[1]]
    sys.exit(main(__doc__, "l0_vs_lrf", sweep_space(), sys.argv[2:], trainer=trainer))
