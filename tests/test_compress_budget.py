"""An l0 run meets its budget: the materialised encoder is within ±0.03 of the target
sparsity on the tiny preset's default steps (too few for the gates to converge), and the
result says what was asked and what was reached."""

import pytest

from kdprune.compress import CompressConfig, compress
from kdprune.models.model_dir import load_model_dir


@pytest.mark.parametrize("target", [0.3, 0.5, 0.75])
def test_l0_meets_its_budget(tiny_workdir, tiny_teacher, target, tmp_path, capfd):
    cfg = CompressConfig(preset="tiny", method="l0", target_sparsity=target, kd_weight=1.0)
    res = compress(cfg, tiny_workdir, out_dir=tmp_path / "run")
    assert res["target_sparsity"] == target
    assert abs(res["achieved_sparsity"] - target) <= 0.03, res
    teacher = load_model_dir(tiny_teacher["model_dir"]).model.encoder_params()
    student = load_model_dir(res["model_dir"]).model.encoder_params()
    assert res["encoder_params"] == student
    assert res["achieved_sparsity"] == pytest.approx(1 - student / teacher)
    if res["budget_fitted"]:  # the run says so when it had to enforce the budget
        assert "had not converged" in capfd.readouterr().err


def test_unreachable_budget_fails_before_training(tiny_workdir, tiny_teacher, tmp_path):
    cfg = CompressConfig(preset="tiny", method="l0", target_sparsity=0.99)
    with pytest.raises(ValueError, match="cannot be met"):
        compress(cfg, tiny_workdir, out_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "model").exists()
