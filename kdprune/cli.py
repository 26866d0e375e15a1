"""`kdprune` command line: one subcommand per pipeline stage (DESIGN §2).

Every subcommand prints progress on stderr and, as its last stdout line, one JSON object
with what it produced (DESIGN §3). Errors print one clear line and exit with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from kdprune.contract import METHODS, PRESETS, SCHEDULES, manifest_field, manifest_selection
from kdprune.device import DEVICE_CHOICES, resolve_device
from kdprune.train.precision import PRECISION_CHOICES, resolve_precision
from kdprune.utils import default_workdir, emit_result

# Each `cmd_*` imports the stage it runs inside the function, on purpose: the pipeline
# pulls in torch (seconds to import on a busy core), `report` mlflow and pandas; so
# `kdprune --help`, a mistyped flag or `kdprune data librispeech` answers at once.
MANIFEST_SPLITS = ("train", "dev", "test")


def add_manifest_flags(p: argparse.ArgumentParser) -> None:
    """--train-manifest/--dev-manifest/--test-manifest: the user's corpus (all three or
    none); every command and sweep script that trains or evaluates takes them."""
    for s in MANIFEST_SPLITS:
        p.add_argument(
            f"--{manifest_field(s).replace('_', '-')}",
            type=Path,
            default=None,
            help=f"{s} manifest; all three or none (default: the preset's generated corpus)",
        )


def manifests_from_args(args: argparse.Namespace) -> dict[str, Path] | None:
    """The parsed manifest flags: {"train", "dev", "test"} paths, or None when none is
    given; a ValueError naming the missing flags when only some are."""
    return manifest_selection(*(getattr(args, manifest_field(s), None) for s in MANIFEST_SPLITS))


def _flags(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The parsed flags ``names`` as keyword arguments of the same names."""
    return {name: getattr(args, name) for name in names}


def _add_common(p: argparse.ArgumentParser, manifests: bool = True) -> None:
    p.add_argument(
        "--preset", default="demo", choices=PRESETS, help="configuration preset (default: demo)"
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="work directory (default $KDPRUNE_WORKDIR or ./work)",
    )
    if manifests:
        add_manifest_flags(p)


def cmd_data_synth(args) -> dict:
    from kdprune.pipeline import synth_data

    return {"manifests": synth_data(args.preset, args.workdir)}


def cmd_data_librispeech(args) -> dict:
    from kdprune.data.librispeech import import_librispeech

    out = args.out or (args.workdir / "data" / "librispeech")
    subsets = {s: getattr(args, f"{s}_subsets") for s in MANIFEST_SPLITS}
    subsets = {s: names for s, names in subsets.items() if names}
    return {"manifests": import_librispeech(args.root, out, subsets)}


def cmd_tokenizer(args) -> dict:
    from kdprune.pipeline import build_tokenizer, resolve_manifests
    from kdprune.presets import get_preset

    preset = get_preset(args.preset)
    tok = build_tokenizer(
        preset,
        resolve_manifests(args.preset, args.workdir, manifests_from_args(args)),
        args.workdir,
    )
    return {"tokenizer": tok.model_file, "vocab_size": tok.vocab_size}


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES,
                   help="auto: CUDA when available, else CPU (default: auto)")  # fmt: skip


def _add_training_device(p: argparse.ArgumentParser) -> None:
    """--device and the training precision (pretrain, finetune, compress)."""
    _add_device(p)
    p.add_argument("--precision", default="auto", choices=PRECISION_CHOICES,
                   help="training autocast dtype; auto: bf16 on CUDA, fp32 on CPU")  # fmt: skip


def cmd_pretrain(args) -> dict:
    from kdprune.pipeline import pretrain

    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    return {
        "pretrain_dir": pretrain(
            args.preset, args.workdir, manifests_from_args(args), device, precision
        )
    }


def cmd_finetune(args) -> dict:
    from kdprune.pipeline import finetune

    device = resolve_device(args.device)
    return finetune(
        args.preset,
        args.workdir,
        manifests_from_args(args),
        out_dir=args.out,
        device=device,
        precision=resolve_precision(args.precision, device),
        **_flags(args, "init", "retrain", "max_steps", "max_minutes", "seed", "lr"),
    )


def cmd_evaluate(args) -> dict:
    if args.runtime == "onnx":
        return _evaluate_onnx(args)
    from kdprune.eval.evaluate import evaluate
    from kdprune.models.model_dir import load_model_dir

    device = resolve_device(args.device)
    m = load_model_dir(args.model, device)
    if args.streaming and not m.config.encoder.streaming:
        raise ValueError(
            f"{args.model} was trained non-streaming (no causal conv/chunked attention); "
            "evaluate it without --streaming or compress it with --streaming"
        )
    res = evaluate(
        m.model,
        m.tokenizer,
        device=device,
        **_flags(args, "manifest", "beam", "output", "streaming"),
    )
    return {"model_dir": Path(args.model).resolve(), **res, "runtime": "torch"}


def _evaluate_onnx(args) -> dict:
    """--runtime onnx: an export directory decoded by onnxruntime on CPU; a model
    directory is exported (and verified) into a temporary one first."""
    import tempfile

    from kdprune.deploy.evaluate import evaluate_onnx
    from kdprune.deploy.runtime import METADATA

    if args.device == "cuda" or args.beam > 1:
        raise ValueError("--runtime onnx decodes greedily on CPU: drop --device cuda / --beam")
    flags = _flags(args, "manifest", "output", "streaming")
    if (args.model / METADATA).exists():
        return {"model_dir": Path(args.model).resolve(), **evaluate_onnx(args.model, **flags)}
    from kdprune.export import export_model

    with tempfile.TemporaryDirectory(prefix="kdprune-onnx-") as tmp:
        export_model(args.model, "onnx", Path(tmp) / "onnx")
        res = evaluate_onnx(Path(tmp) / "onnx", **flags)
    return {"model_dir": Path(args.model).resolve(), **res}


def cmd_compress(args) -> dict:
    from kdprune.compress import CompressConfig, TrainerContext, compress
    from kdprune.data.selection import manifest_fields

    corpus = {manifest_field(s) for s in MANIFEST_SPLITS}  # given as paths: made absolute
    names = [f.name for f in fields(CompressConfig) if f.name not in corpus]
    cfg = CompressConfig(**_flags(args, *names), **manifest_fields(manifests_from_args(args)))
    device = resolve_device(args.device)
    ctx = TrainerContext(device=str(device), precision=resolve_precision(args.precision, device))
    return compress(cfg, args.workdir, out_dir=args.out, teacher_dir=args.teacher, ctx=ctx)


def cmd_import(args) -> dict:
    from kdprune.models.hf_import import import_checkpoint

    return import_checkpoint(args.checkpoint, args.out)


def cmd_export(args) -> dict:
    from kdprune.export import export_model

    return export_model(args.model, args.format, args.out)


def cmd_report(args) -> dict:
    from kdprune.analysis.report import write_report

    return write_report(args.experiment, args.tracking_uri, args.out, register=args.register)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="kdprune", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="build or import a corpus").add_subparsers(
        dest="data_command", required=True
    )
    p = data.add_parser("synth", help="synthesise the embedded TTS corpus of a preset")
    _add_common(p, manifests=False)
    p.set_defaults(func=cmd_data_synth)
    p = data.add_parser("librispeech", help="import a LibriSpeech directory into manifests")
    _add_common(p, manifests=False)
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--out", type=Path, default=None)
    # The defaults live in kdprune.data.librispeech.DEFAULT_SUBSETS (not imported here).
    for split, default in [("train", "every train-* subset present"), ("dev", "dev-clean"),
                           ("test", "test-clean")]:  # fmt: skip
        p.add_argument(f"--{split}-subsets", nargs="+", metavar="SUBSET",
                       help=f"LibriSpeech subsets of the {split} split (default: {default})")  # fmt: skip
    p.set_defaults(func=cmd_data_librispeech)

    p = sub.add_parser("tokenizer", help="train the sentencepiece tokenizer")
    _add_common(p)
    p.set_defaults(func=cmd_tokenizer)

    p = sub.add_parser("pretrain", help="BEST-RQ SSL pre-training of the encoder (the SSL teacher)")
    _add_common(p)
    _add_training_device(p)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser(
        "finetune", help="dense RNN-T on the SSL encoder (the uncompressed baseline)"
    )
    _add_common(p)
    p.add_argument(
        "--init",
        default="ssl",
        help="ssl (BEST-RQ encoder) | random | a model directory to continue training from",
    )
    p.add_argument("--retrain", action="store_true", help="train even if a (shipped) model exists")
    p.add_argument("--out", type=Path, default=None, help="write the model directory here")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: preset)")
    p.add_argument("--seed", type=int, default=0)
    _add_training_device(p)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser(
        "compress", help="one compression run: l0 / LRF / small / none, KD, joint or sequential"
    )
    _add_common(p)
    p.add_argument("--method", default="l0", choices=METHODS)
    p.add_argument("--kd-weight", type=float, default=1.0, help="weight of the KD loss (0: off)")
    p.add_argument(
        "--target-sparsity",
        type=float,
        default=0.5,
        help="fraction of encoder params to remove (l0, small)",
    )
    p.add_argument(
        "--rank-ratio",
        type=float,
        default=0.5,
        help="rank / min(out, in) of factorised projections (lrf)",
    )
    p.add_argument(
        "--schedule",
        default="joint",
        choices=SCHEDULES,
        help="joint: prune while training with RNN-T + KD; sequential: prune + KD, then RNN-T",
    )
    p.add_argument(
        "--streaming", action="store_true", help="chunked attention + causal conv student"
    )
    p.add_argument("--chunk-size", type=int, default=8, help="frames after subsampling per chunk")
    p.add_argument("--left-chunks", type=int, default=4, help="chunks of left context")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--steps", type=int, default=0, help="compression steps (0: the preset's default)"
    )
    p.add_argument(
        "--teacher", type=Path, default=None, help="teacher model directory (default: the preset's)"
    )
    p.add_argument("--out", type=Path, default=None, help="output directory")
    _add_training_device(p)
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser(
        "export", help="export a model directory to ONNX (the whole transducer) or TorchScript"
    )
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--format", choices=("torchscript", "onnx"), default="torchscript",
                   help="onnx: encoder, decoder, joiner (+ streaming encoder), tokens.txt, "
                   "metadata.json; torchscript: the encoder")  # fmt: skip
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import", help="import a public SSL checkpoint as a model directory")
    p.add_argument("--from", dest="source", required=True, choices=("hf-wav2vec2-conformer",),
                   help="checkpoint kind: a local Hugging Face Wav2Vec2-Conformer folder")  # fmt: skip
    p.add_argument("--checkpoint", type=Path, required=True, help="save_pretrained folder")
    p.add_argument("--out", type=Path, required=True, help="write the model directory here")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("evaluate", help="WER, params and latency of a model directory")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--streaming", action="store_true", help="chunk-by-chunk streaming inference")
    p.add_argument("--runtime", default="torch", choices=("torch", "onnx"),
                   help="onnx: decode an ONNX export (or a model directory, exported first) "
                   "with onnxruntime on CPU, 1 thread")  # fmt: skip
    _add_device(p)
    p.add_argument("--beam", type=int, default=1, help="beam size (1: greedy)")
    p.add_argument(
        "--output", type=Path, default=None, help="write per-utterance hypotheses (JSON lines)"
    )
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("report", help="Pareto report of a sweep from MLflow")
    p.add_argument("--experiment", required=True)
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--register", nargs="?", const="knee", choices=("knee", "front"),
                   help="put the knee model (or the whole front) in the MLflow Model Registry")  # fmt: skip
    p.set_defaults(func=cmd_report)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(args, "workdir") and args.workdir is None:
        args.workdir = default_workdir()
    if getattr(args, "workdir", None) is not None:
        args.workdir = Path(args.workdir).resolve()
    if os.environ.get("KDPRUNE_DEBUG"):
        emit_result(args.func(args))
        return 0
    try:
        result = args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"kdprune {args.command}: error: {e}", file=sys.stderr)
        return 2
    emit_result(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
