"""Import of Hugging Face Wav2Vec2-Conformer checkpoints: output parity with transformers'
own forward (encoder output and every layer's hidden state, relative and rotary position,
padded batches), and one clear error for every checkpoint the importer cannot reproduce."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch
from conftest import PY
from hf_checkpoints import HF_REASON, save_checkpoint

from kdprune.models.hf_import import CheckpointError, import_hf_wav2vec2_conformer
from kdprune.models.model_dir import ModelDirError, load_model_dir

pytest.importorskip("transformers", reason=HF_REASON)

TOL = 1e-4  # fp32, eval mode
LENGTHS = (6400, 4960, 3520)  # samples: 0.4 s, 0.31 s, 0.22 s (whole 10 ms frames)


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(len(LENGTHS), max(LENGTHS), generator=g)
    lens = torch.tensor(LENGTHS)
    x[torch.arange(x.shape[1])[None] >= lens[:, None]] = 0.0
    return x, lens


@pytest.mark.parametrize("position", ["relative", "rotary"])
def test_parity_with_transformers(tmp_path, position):
    """Ours on a padded batch == transformers on each utterance alone, at the encoder output
    and every layer (HF hidden_states[i + 1] is layer i's output; [0] the projection).
    Also == transformers' own padded batch on the longest (unpadded) utterance.
    Transformers' conv module reads padded frames (it zeroes them only at the encoder
    input), so its padded-batch output near a shorter utterance's end depends on padding;
    ours does not (padding invariance), so shorter utterances compare with the unpadded run."""
    ckpt, hf = save_checkpoint(tmp_path / "ckpt", position)
    enc = import_hf_wav2vec2_conformer(ckpt).encoder
    x, lens = batch()
    frames = x.view(len(LENGTHS), -1, 160)
    errs = {"out": 0.0, **{f"layer{i}": 0.0 for i in range(len(enc.layers))}}
    with torch.no_grad():
        ours = enc(frames, lens // 160, return_hidden=True)
        for b, n in enumerate(LENGTHS):
            ref = hf(x[b : b + 1, :n], output_hidden_states=True)
            t = int(ours.lengths[b])
            assert t == ref.last_hidden_state.shape[1]
            errs["out"] = max(
                errs["out"], float((ours.out[b, :t] - ref.last_hidden_state[0]).abs().max())
            )
            for i, h in enumerate(ours.hidden):
                e = float((h[b, :t] - ref.hidden_states[i + 1][0]).abs().max())
                errs[f"layer{i}"] = max(errs[f"layer{i}"], e)
        mask = (torch.arange(x.shape[1])[None] < lens[:, None]).long()
        padded = hf(x, attention_mask=mask).last_hidden_state
        errs["batched_longest"] = float((ours.out[0] - padded[0]).abs().max())
    print(f"{position} max abs error: {errs}")
    assert max(errs.values()) <= TOL, errs


def test_safe_bin_weights(tmp_path):
    """pytorch_model.bin loads with weights_only; a pickle with code in it is refused."""
    ckpt, hf = save_checkpoint(tmp_path / "ckpt", "relative")
    (ckpt / "model.safetensors").unlink()
    torch.save(hf.state_dict(), ckpt / "pytorch_model.bin")
    import_hf_wav2vec2_conformer(ckpt)
    torch.save({"w": torch.zeros(1), "f": print}, ckpt / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        import_hf_wav2vec2_conformer(ckpt)


def _config_only(tmp_path, cfg) -> object:
    cfg.save_pretrained(tmp_path)
    return tmp_path


def test_other_architectures_refused(tmp_path):
    from transformers import HubertConfig, Wav2Vec2Config

    for name, cfg in (("w2v2", Wav2Vec2Config()), ("hubert", HubertConfig())):
        d = tmp_path / name
        cfg.save_pretrained(d)
        with pytest.raises(
            CheckpointError, match=r"model_type '(wav2vec2|hubert)'.*wav2vec2-conformer"
        ):
            import_hf_wav2vec2_conformer(d)


@pytest.mark.parametrize(
    ("field", "value"),
    [("feat_extract_norm", "group"), ("hidden_act", "gelu"), ("add_adapter", True)],
)
def test_unsupported_field_refused(tmp_path, field, value):
    ckpt, _ = save_checkpoint(tmp_path / "ckpt", "relative")
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg[field] = value
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=f"unsupported {field}=.*supported:"):
        import_hf_wav2vec2_conformer(ckpt)


def test_missing_weights_refused(tmp_path):
    ckpt, _ = save_checkpoint(tmp_path / "ckpt", "rotary")
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weight file.*model.safetensors"):
        import_hf_wav2vec2_conformer(ckpt)


def test_cli_import(tmp_path):
    """`kdprune import` writes a model directory (no tokenizer yet: evaluate says what to do)
    and prints one JSON object last; a bad checkpoint is one error line, exit status 2."""
    ckpt, _ = save_checkpoint(tmp_path / "ckpt", "relative")
    out = tmp_path / "imported"
    cmd = [PY, "-m", "kdprune.cli", "import", "--from", "hf-wav2vec2-conformer"]
    r = subprocess.run(
        [*cmd, "--checkpoint", str(ckpt), "--out", str(out)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["model_dir"] == str(out) and res["position"] == "relative"
    loaded = load_model_dir(out, encoder_only=True)
    assert loaded.tokenizer is None and loaded.model.encoder_params() == res["encoder_params"]
    with pytest.raises(ModelDirError, match="finetune --init"):
        load_model_dir(out)
    (ckpt / "model.safetensors").unlink()
    r = subprocess.run(
        [*cmd, "--checkpoint", str(ckpt), "--out", str(out)], capture_output=True, text=True
    )
    assert (
        r.returncode == 2
        and "no weight file" in r.stderr
        and len(r.stderr.strip().splitlines()) == 1
    )


def test_waveform_features_match_the_feature_extractor():
    """kind="waveform" features normalise like Wav2Vec2FeatureExtractor(do_normalize=True)."""
    from transformers import Wav2Vec2FeatureExtractor

    from kdprune.data.features import FeatureConfig, extract_features

    wave = torch.randn(4800) * 0.3 + 0.05
    ours = extract_features(wave, FeatureConfig(n_mels=160, kind="waveform")).reshape(-1)
    ref = Wav2Vec2FeatureExtractor(do_normalize=True)(wave.numpy(), sampling_rate=16000)
    assert torch.allclose(ours, torch.as_tensor(ref["input_values"][0]).float(), atol=1e-5)
