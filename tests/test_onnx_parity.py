"""End-to-end ONNX parity on the tiny preset's real test set: a dense teacher, an
l0-pruned, an LRF and a streaming student, each exported with `kdprune export --format
onnx` and decoded with `kdprune evaluate --runtime onnx` (the README's two commands),
give PyTorch's WER within 0.2 points and the same hypothesis on >= 98 % of utterances;
streaming ones chunk by chunk against the cached PyTorch streaming decode.

The tiny preset's models train for seconds and emit few tokens; token-by-token parity of
models that emit on most frames is tests/test_onnx_export.py's (random weights), and the
demo models' figures are in README "Deploy the model you picked"."""

import json
from dataclasses import replace
from pathlib import Path

import pytest

from kdprune.cli import main
from kdprune.compress import CompressConfig, compress
from kdprune.eval.evaluate import evaluate
from kdprune.models.model_dir import load_model_dir

# A few compression steps (a test of the export, not of compression); streaming with
# chunks of 4 frames and 3 of left context (the cache's every case: empty, filling, full).
SHORT_RUN = CompressConfig(preset="tiny", kd_weight=1.0, target_sparsity=0.5, rank_ratio=0.4,
                           steps=6, chunk_size=4, left_chunks=3)  # fmt: skip
STUDENTS = {
    "l0": replace(SHORT_RUN, method="l0"),
    "lrf": replace(SHORT_RUN, method="lrf"),
    "streaming": replace(SHORT_RUN, method="l0", streaming=True),
}


# The `kdprune evaluate` JSON both runtimes give (DESIGN §3), and streaming's timing.
CONTRACT = ("wer", "errors", "reference_words", "num_utterances", "params", "encoder_params",
            "latency_ms_per_audio_s", "rtf", "latency_threads", "device", "beam", "streaming",
            "manifest")  # fmt: skip
STREAM_KEYS = ("chunk_ms", "chunk_latency_ms_mean", "chunk_latency_ms_p95",
               "stream_latency_ms_per_audio_s")  # fmt: skip


def cli_json(capsys, *argv: str) -> dict:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def hypotheses(path) -> list[str]:
    return [json.loads(line)["hypothesis"] for line in path.read_text().splitlines()]


@pytest.mark.parametrize("kind", ["dense", *STUDENTS])
def test_onnx_runtime_decodes_like_pytorch(
    kind, tiny_workdir, tiny_manifests, tiny_teacher, tmp_path, capsys
):
    model_dir = tiny_teacher["model_dir"]
    if kind in STUDENTS:
        model_dir = compress(
            STUDENTS[kind], tiny_workdir, out_dir=tmp_path / kind, teacher_dir=model_dir
        )["model_dir"]
    streaming = kind == "streaming"
    exported = cli_json(capsys, "export", "--model", str(model_dir), "--format", "onnx",
                        "--out", str(tmp_path / "onnx"))  # fmt: skip
    assert exported["streaming"] == streaming and exported["max_abs_diff"] <= 1e-4
    test = str(tiny_manifests["test"])
    flags = ["--streaming"] if streaming else []
    got = cli_json(capsys, "evaluate", "--model", exported["export"], "--manifest", test,
                   "--runtime", "onnx", "--output", str(tmp_path / "onnx.jsonl"), *flags)  # fmt: skip
    m = load_model_dir(model_dir)
    want = evaluate(m.model, m.tokenizer, test, device="cpu", output=tmp_path / "torch.jsonl",
                    streaming=streaming)  # fmt: skip
    assert got["runtime"] == "onnx" and got["streaming"] == streaming
    assert got["num_utterances"] == want["num_utterances"] > 0
    assert got["params"] == want["params"] and got["encoder_params"] == want["encoder_params"]
    assert abs(got["wer"] - want["wer"]) <= 0.002
    ours, theirs = hypotheses(tmp_path / "onnx.jsonl"), hypotheses(tmp_path / "torch.jsonl")
    same = sum(a == b for a, b in zip(ours, theirs, strict=True))
    assert same >= 0.98 * len(ours)
    keys = CONTRACT + (STREAM_KEYS if streaming else ())
    assert all(k in want for k in keys) and all(k in got for k in keys)
    if streaming:
        assert got["chunk_latency_ms_p95"] >= got["chunk_latency_ms_p50"] > 0


def test_evaluate_runtime_onnx_exports_a_model_directory_itself(
    tiny_teacher, tiny_manifests, capsys
):
    got = cli_json(capsys, "evaluate", "--model", str(tiny_teacher["model_dir"]),
                   "--manifest", str(tiny_manifests["test"]), "--runtime", "onnx")  # fmt: skip
    assert got["runtime"] == "onnx"
    assert got["model_dir"] == str(Path(tiny_teacher["model_dir"]).resolve())
    assert main(["evaluate", "--model", str(tiny_teacher["model_dir"]), "--manifest",
                 str(tiny_manifests["test"]), "--runtime", "onnx", "--beam", "4"]) == 2  # fmt: skip
