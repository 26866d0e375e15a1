"""The `small` KD baseline starts from the teacher: evenly spaced teacher layers, truncated
to the student's width, at about the parameter budget."""

import pytest
import torch
from conftest import tiny_model

from kdprune.distill.small import (
    encoder_param_count,
    init_small_from_teacher,
    small_student_config,
    teacher_layer_picks,
)
from kdprune.models.conformer import ConformerEncoder
from kdprune.pruning.materialise import copy_truncated_layer


def test_layer_picks_are_evenly_spaced_and_keep_first_and_last():
    assert teacher_layer_picks(6, 4) == [0, 2, 3, 5]
    assert teacher_layer_picks(6, 6) == list(range(6))
    assert teacher_layer_picks(6, 1) == [5]


def test_full_width_copy_computes_what_the_teacher_layer_computes():
    enc = tiny_model().encoder.eval()
    twin = ConformerEncoder(enc.cfg).eval()
    for old, new in zip(enc.layers, twin.layers, strict=True):
        copy_truncated_layer(old, new)
    twin.subsampling.load_state_dict(enc.subsampling.state_dict())
    x, lens = torch.randn(2, 64, enc.cfg.input_dim), torch.tensor([64, 50])
    torch.testing.assert_close(twin(x, lens).out, enc(x, lens).out)


def test_small_student_is_initialised_from_truncated_teacher_layers():
    teacher = tiny_model().encoder
    cfg = small_student_config(teacher.cfg, 0.5)
    assert abs(encoder_param_count(cfg) / teacher.num_params() - 0.5) < 0.1
    student = ConformerEncoder(cfg)
    picks = init_small_from_teacher(student, teacher)
    assert len(picks) == len(student.layers) < len(teacher.layers)
    for s, j in zip(student.layers, picks, strict=True):
        t = teacher.layers[j]
        k = s.ffn1.w1.out_features
        assert k < t.ffn1.w1.out_features
        torch.testing.assert_close(s.ffn1.w1.weight, t.ffn1.w1.weight[:k])
        torch.testing.assert_close(s.ffn1.w2.weight, t.ffn1.w2.weight[:, :k])
        rows = s.attn.num_heads * s.attn.head_dim
        torch.testing.assert_close(s.attn.q.weight, t.attn.q.weight[:rows])
        torch.testing.assert_close(s.final_norm.weight, t.final_norm.weight)


def test_truncating_to_more_units_than_the_teacher_has_is_refused():
    small = ConformerEncoder(small_student_config(tiny_model().encoder.cfg, 0.5))
    with pytest.raises(ValueError, match="cannot truncate"):
        copy_truncated_layer(small.layers[0], tiny_model().encoder.layers[0])
