"""``--device {auto,cpu,cuda}``: one resolution (`kdprune.device.resolve_device`), and the
resolved device is what training (`fit`), decoding and latency measurement receive, for
real runs of `kdprune pretrain / finetune / compress / evaluate` on the tiny preset.

The callees are wrapped, not replaced: each wrapper records the device it was given and
calls the real function, so the run below is the real one."""

from __future__ import annotations

import functools
import json

import pytest
import torch

import kdprune.compress.stage as stage_mod
import kdprune.compress.student as student_mod
import kdprune.eval.evaluate as evaluate_mod
import kdprune.pipeline as pipeline_mod
from kdprune import cli
from kdprune.device import resolve_device
from kdprune.eval.evaluate import model_latency
from kdprune.models.model_dir import load_model_dir
from kdprune.presets import get_preset

DEVICES = ("cpu", "auto")  # "cuda" too on a machine that has it
if torch.cuda.is_available():
    DEVICES += ("cuda",)


def record(monkeypatch, module, name: str, seen: list, position: int) -> None:
    """Wrap ``module.name`` so each call appends the device it got (keyword ``device`` or
    the positional argument at ``position``) to ``seen`` and then runs the real function."""
    real = getattr(module, name)

    @functools.wraps(real)
    def wrapper(*args, **kwargs):
        device = kwargs["device"] if "device" in kwargs else args[position]
        seen.append((name, torch.device(device)))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)


def run_cli(capsys, *argv: str) -> dict:
    rc = cli.main(list(argv))
    out = capsys.readouterr()
    assert rc == 0, out.err[-2000:]
    return json.loads(out.out.strip().splitlines()[-1])


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    auto = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("auto") == resolve_device(None) == auto
    with pytest.raises(ValueError, match="unsupported device"):
        resolve_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device is available"):
            resolve_device("cuda")


def test_cuda_without_cuda_is_one_clear_cli_error(capsys, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    rc = cli.main(["finetune", "--preset", "tiny", "--workdir", str(tmp_path), "--device", "cuda"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "no CUDA device is available" in err
    assert not (tmp_path / "data").exists()  # refused before any work


@pytest.mark.parametrize("device", DEVICES)
def test_finetune_and_pretrain_train_evaluate_and_time_on_the_device(
    device, monkeypatch, capsys, tmp_path, tiny_manifests
):
    seen: list = []
    record(monkeypatch, pipeline_mod, "fit", seen, 11)  # pretrain's and finetune's
    record(monkeypatch, pipeline_mod, "wer_on", seen, 3)
    record(monkeypatch, pipeline_mod, "model_latency", seen, 3)
    corpus = [f"--{s}-manifest={tiny_manifests[s]}" for s in ("train", "dev", "test")]
    out = run_cli(capsys, "finetune", "--preset", "tiny", "--workdir", str(tmp_path),
                  "--max-steps", "3", "--device", device, *corpus)  # fmt: skip
    want = resolve_device(device)
    names = [n for n, _ in seen]
    assert names.count("fit") == 2  # BEST-RQ pre-training, then RNN-T fine-tuning
    assert {"wer_on", "model_latency"} <= set(names)
    assert all(d == want for _, d in seen), seen
    meta = json.loads((tmp_path / out["model_dir"] / "config.json").read_text())
    assert meta["extra"]["device"] == str(want)


@pytest.mark.parametrize("device", DEVICES)
def test_compress_trains_evaluates_and_times_on_the_device(
    device, monkeypatch, capsys, tmp_path, tiny_teacher, tiny_workdir
):
    seen: list = []
    record(monkeypatch, stage_mod, "fit", seen, 11)
    record(monkeypatch, stage_mod, "wer_on", seen, 3)  # rung evaluations
    record(monkeypatch, student_mod, "decode_set", seen, 3)  # final dev/test WER
    record(monkeypatch, student_mod, "model_latency", seen, 3)
    run_cli(capsys, "compress", "--preset", "tiny", "--workdir", str(tiny_workdir),
            "--teacher", tiny_teacher["model_dir"], "--steps", "4", "--out", str(tmp_path / "c"),
            "--device", device)  # fmt: skip
    want = resolve_device(device)
    assert {n for n, _ in seen} == {"fit", "wer_on", "decode_set", "model_latency"}
    assert all(d == want for _, d in seen), seen


def test_evaluate_decodes_and_times_on_the_device(
    monkeypatch, capsys, tiny_teacher, tiny_manifests
):
    seen: list = []
    record(monkeypatch, evaluate_mod, "transcribe", seen, 3)
    record(monkeypatch, evaluate_mod, "model_latency", seen, 3)
    out = run_cli(capsys, "evaluate", "--model", tiny_teacher["model_dir"],
                  "--manifest", str(tiny_manifests["test"]), "--device", "auto")  # fmt: skip
    want = resolve_device("auto")
    assert [n for n, _ in seen] == ["transcribe", "model_latency"]
    assert all(d == want for _, d in seen) and out["device"] == str(want)


def test_latency_is_measured_where_the_model_is(tiny_teacher, tiny_workdir, tiny_manifests):
    """A device other than the model's is refused rather than timed elsewhere; without
    one, the model's own device is used."""
    loaded = load_model_dir(tiny_teacher["model_dir"], "cpu")
    fs = pipeline_mod.features(tiny_manifests, get_preset("tiny"), tiny_workdir, "test")
    with pytest.raises(ValueError, match="the model is on cpu"):
        model_latency(loaded.model, fs, loaded.tokenizer, device="meta", max_utts=2)
    lat = model_latency(loaded.model, fs, loaded.tokenizer, max_utts=2)
    assert lat["latency_ms_per_audio_s"] > 0
