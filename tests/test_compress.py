"""`compress` on the tiny preset: every method x schedule x streaming; KD invariants; export."""

import copy
import json
from dataclasses import replace

import pytest
import torch

from kdprune.compress import CompressConfig, check_compress_config, compress
from kdprune.compress.config import TrainerContext, compress_recipe
from kdprune.compress.stage import Stage, StageEnv, run_stage
from kdprune.compress.student import build_student
from kdprune.contract import FINAL_METRICS, METHODS, SCHEDULES
from kdprune.distill.kd import KDConfig, LayerKD
from kdprune.models.conformer import lengths_to_mask
from kdprune.models.model_dir import load_model_dir
from kdprune.prepare import prepare

# A few steps of the tiny preset, the knobs in mid-range (chunks of the tests' size).
SHORT_RUN = CompressConfig(
    preset="tiny",
    kd_weight=1.0,
    target_sparsity=0.5,
    rank_ratio=0.4,
    steps=6,
    chunk_size=4,
    left_chunks=1,
)


@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("method", METHODS)
def test_compress_every_combination(
    tiny_workdir, tiny_teacher, method, schedule, streaming, tmp_path
):
    cfg = replace(SHORT_RUN, method=method, schedule=schedule, streaming=streaming)
    res = compress(
        cfg, tiny_workdir, out_dir=tmp_path / "out", teacher_dir=tiny_teacher["model_dir"]
    )
    for k in FINAL_METRICS:  # the DESIGN §3 final metrics, as the analysis loader reads them
        assert k in res, k
    saved = load_model_dir(res["model_dir"])  # plain model, loads with no pruning code
    assert saved.model.encoder_params() == res["encoder_params"]
    assert saved.config.encoder.streaming == streaming
    assert (
        json.loads((tmp_path / "out" / "metrics.json").read_text())["encoder_params"]
        == res["encoder_params"]
    )
    for split in ("dev", "test"):  # per-utterance evidence beside metrics.json, same WER
        lines = (tmp_path / "out" / f"utterances_{split}.jsonl").read_text().splitlines()
        recs = [json.loads(x) for x in lines]
        wer = sum(r["errors"] for r in recs) / sum(r["ref_words"] for r in recs)
        assert wer == pytest.approx(res[f"wer_{split}"])
    if method == "lrf":
        assert res["achieved_sparsity"] > 0.2
    if method == "small":
        assert abs(res["achieved_sparsity"] - 0.5) < 0.03
    if method == "none":
        assert res["achieved_sparsity"] == 0.0


def test_kd_loss_zero_when_student_equals_teacher(tiny_teacher, tiny_workdir, tiny_manifests):
    from kdprune.data.batching import collate
    from kdprune.pipeline import features
    from kdprune.presets import get_preset

    t = load_model_dir(tiny_teacher["model_dir"])
    fs = features(tiny_manifests, get_preset("tiny"), tiny_workdir, "dev")
    b = collate(fs, [0, 1, 2], t.tokenizer)
    student = copy.deepcopy(t.model)
    with torch.no_grad():
        th = t.model.encode(b.feats, b.feat_lens, return_hidden=True)
        sh = student.encode(b.feats, b.feat_lens, return_hidden=True)
    n = t.config.encoder.num_layers
    kd = LayerKD(t.config.encoder.d_model, t.config.encoder.d_model, n, n, KDConfig())
    loss = kd(sh.hidden, th.hidden, lengths_to_mask(sh.lengths, sh.out.shape[1]))
    assert float(loss) < 1e-5


def test_teacher_receives_no_gradient_in_a_real_stage(tiny_teacher, tiny_workdir, tmp_path):
    """One real pruning step (l0, RNN-T + KD) through the compression stage, handed a
    teacher nobody froze (train mode, requires_grad on): the stage gives it no gradient
    and leaves its weights and BatchNorm statistics as they were; the student trains."""
    data = prepare("tiny", tiny_workdir, teacher=tiny_teacher["model_dir"])
    teacher = data.teacher.model.train().requires_grad_(True)
    teacher_before = copy.deepcopy(teacher.state_dict())
    cfg = CompressConfig(preset="tiny", method="l0", kd_weight=1.0)
    recipe = compress_recipe(cfg)
    student, state = build_student(cfg, teacher, recipe)
    student_before = copy.deepcopy(student.encoder.state_dict())
    env = StageEnv(
        teacher=teacher,
        data=data,
        recipe=recipe,
        ctx=TrainerContext(),
        ckpt=tmp_path / "ckpt",
        target_sparsity=cfg.target_sparsity,
    )
    run_stage(Stage(name="prune", steps=1, use_asr=True, kd_weight=1.0), student, state, env)
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(v, teacher_before[k]) for k, v in teacher.state_dict().items())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.encoder.parameters())
    changed = [
        k for k, v in student.encoder.state_dict().items() if not torch.equal(v, student_before[k])
    ]
    assert changed


@pytest.mark.parametrize(
    "bad,match",
    [
        (dict(target_sparsity=1.0), "target_sparsity"),
        (dict(target_sparsity=-0.1), "target_sparsity"),
        (dict(rank_ratio=0.0), "rank_ratio"),
        (dict(rank_ratio=1.5), "rank_ratio"),
        (dict(kd_weight=-1.0), "kd_weight"),
        (dict(method="magnitude"), "method"),
        (dict(preset="huge"), "preset"),
        (dict(schedule="alternating"), "schedule"),
    ],
)
def test_bad_compress_config_is_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        check_compress_config(CompressConfig(**bad))


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_parity(tiny_teacher, tmp_path, fmt):
    from kdprune.export import export_model

    res = export_model(tiny_teacher["model_dir"], fmt, tmp_path / fmt)
    assert res["max_abs_diff"] <= 1e-4
