"""bench/compression.py's P7 peak table: device names as torch reports them map to their
own board's dense bf16 peak (SXM vs PCIe vs NVL, L4 vs L40S, A10 vs A10G)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "bench_compression", REPO / "bench" / "compression.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize(
    "name, tflops",
    [
        ("NVIDIA H100 80GB HBM3", 989),
        ("NVIDIA H100 PCIe", 756),
        ("NVIDIA H100 NVL", 835),
        ("NVIDIA H200", 989),
        ("NVIDIA A100-SXM4-80GB", 312),
        ("NVIDIA A100-PCIE-40GB", 312),
        ("NVIDIA L4", 121),
        ("NVIDIA L40S", 362),
        ("NVIDIA L40", 181),
        ("NVIDIA A10", 125),
        ("NVIDIA A10G", None),  # no published sheet: no MFU rather than the A10's figure
        ("cpu x86_64 2 threads", None),
    ],
)
def test_peak_matches_the_exact_board(bench, name, tflops):
    peak = bench.peak_bf16(name)
    assert (peak / 1e12 if peak else None) == tflops
