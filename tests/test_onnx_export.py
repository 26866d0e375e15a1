"""ONNX export of random tiny models of every kind (dense, materialised l0 with its front
end cut, LRF; streaming or not; learned, relative or rotary positions): the streaming chunk graph equals the cached PyTorch
`StreamingEncoder` and the masked full-sequence forward, every exported graph equals eager
PyTorch in onnxruntime at other batch sizes and lengths, and onnxruntime's greedy search
emits PyTorch's tokens."""

import json

import numpy as np
import pytest
import torch
from conftest import randomise_gates, tiny_model

from kdprune.data.tokenizer import train_tokenizer
from kdprune.deploy.graphs import StreamingEncoderGraph
from kdprune.deploy.onnx_export import _stream_meta, export_onnx
from kdprune.deploy.runtime import GreedySearch, OnnxTransducer, chunk_windows, read_tokens
from kdprune.eval.decode import greedy_decode
from kdprune.models.model_dir import save_model_dir
from kdprune.models.streaming import StreamingEncoder
from kdprune.models.transducer import Transducer
from kdprune.pruning import PruneConfig, attach_gates, materialise

KINDS = ("dense", "l0", "lrf")


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    texts = ["turn the light on", "set a timer for ten minutes", "play some music"] * 20
    return train_tokenizer(texts, tmp_path_factory.mktemp("tok") / "t.model", 30)


def model_of(kind: str, streaming: bool = True, vocab: int = 12, **kw) -> Transducer:
    """A random tiny model as compression leaves it: dense, l0-materialised (a conv module
    and heads cut) or LRF-factorised; chunks of 4 frames with 3 of left context."""
    kw = {"chunk_size": 4, "left_chunks": 3, **kw}
    if kind == "lrf":
        return tiny_model(streaming, vocab=vocab, factorised=True, **kw).eval()
    model = tiny_model(streaming, vocab=vocab, **kw)
    if kind == "l0":
        attach_gates(model, PruneConfig(modules=True))
        randomise_gates(model)
        model = materialise(model)
    return model.eval()


def stream_graph_out(model: Transducer, x: torch.Tensor) -> torch.Tensor:
    """The streaming graph run eagerly over `chunk_windows` of x (1, N, F)."""
    graph = StreamingEncoderGraph(model).eval()
    state = [torch.zeros(1, dtype=torch.long)]
    state += [torch.zeros(1, *shape) for _, shape in graph.state_specs()]
    outs = []
    for start, end in chunk_windows(x.shape[1], _stream_meta(model, graph)):
        out, *state = graph(x[:, start:end], *state)
        outs.append(out)
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("left_chunks", [0, 1, 3])
@pytest.mark.parametrize("kind", KINDS)
@torch.no_grad()
def test_streaming_graph_equals_streaming_encoder_and_masked_forward(kind, left_chunks):
    model = model_of(kind, left_chunks=left_chunks)
    x = torch.randn(1, 157, 80, generator=torch.Generator().manual_seed(0))
    got = stream_graph_out(model, x)
    cached = StreamingEncoder(model.encoder).push(model.normaliser(x), final=True)
    full = model.encode(x, torch.tensor([157])).out
    assert got.shape == (1, 38, model.cfg.joint_dim)  # (157 - 7) // 4 + 1 frames
    assert (got - model.joiner.enc_proj(cached)).abs().max() < 1e-4
    assert (got - model.joiner.enc_proj(full)).abs().max() < 1e-4


def test_chunk_windows_cover_every_output_once():
    stream = {"subsampling": 4, "receptive_field": 7, "chunk_size": 4}
    wins = chunk_windows(157, stream)
    outs = [(e - s - 7) // 4 + 1 for s, e in wins]
    assert outs == [4] * 9 + [2] and wins[1][0] == 16 and wins[-1][1] <= 157
    assert chunk_windows(6, stream) == []  # shorter than one receptive field: nothing


@pytest.mark.parametrize(
    "kind,streaming,position",
    [("dense", False, {}), ("dense", True, {}), ("l0", True, {}), ("lrf", False, {}),
     ("l0", True, {"position": "relative"}), ("dense", True, {"position": "rotary",
                                                              "rotary_dim": 8})],
)  # fmt: skip
def test_export_verifies_every_graph_and_decodes_like_pytorch(
    tok, tmp_path, kind, streaming, position
):
    model = model_of(kind, streaming, vocab=tok.vocab_size, **position)
    src = save_model_dir(tmp_path / "model", model, tok)
    res = export_onnx(src, tmp_path / "onnx")
    graphs = {"encoder", "decoder", "joiner"} | ({"streaming_encoder"} if streaming else set())
    assert set(res["max_abs_diff_per_graph"]) == graphs and res["max_abs_diff"] <= 1e-4
    meta = json.loads((tmp_path / "onnx" / "metadata.json").read_text())
    assert meta["blank_id"] == tok.vocab_size == meta["vocab_size"]
    assert meta["params"] == model.num_params()
    assert (meta["streaming"] is not None) == streaming
    tokens = read_tokens(tmp_path / "onnx" / "tokens.txt")
    assert tokens[: tok.vocab_size] == [tok.sp.id_to_piece(i) for i in range(tok.vocab_size)]
    assert tokens[-1] == "<blk>"
    # Greedy search in onnxruntime (padded batch of 2) == PyTorch's greedy_decode.
    ort_model = OnnxTransducer(tmp_path / "onnx", threads=1)
    g = torch.Generator().manual_seed(3)
    x, lens = torch.randn(2, 181, 80, generator=g), torch.tensor([181, 133])
    with torch.no_grad():
        enc = model.encode(x, lens)
        want = greedy_decode(model, enc.out, enc.lengths)
    out, out_lens = ort_model.encode(x.numpy(), lens.numpy())
    assert GreedySearch(ort_model, 2).feed(out, out_lens) == want
    ids = torch.randint(0, tok.vocab_size + 1, (200, 6), generator=g).tolist()
    assert [ort_model.text(i) for i in ids + want] == [tok.decode(i) for i in ids + want]
    if streaming:  # chunk by chunk: the same tokens as the masked full forward's
        model.encoder.force_chunking = (model.cfg.encoder.chunk_size, 3)
        with torch.no_grad():
            enc = model.encode(x[:1], lens[:1])
            want = greedy_decode(model, enc.out, enc.lengths)[0]
        search = GreedySearch(ort_model, 1)
        for chunk in ort_model.stream_chunks(x[:1].numpy()):
            search.feed(chunk)
        assert search.hyps[0] == want


def test_streaming_graph_runs_a_batch_of_streams(tok, tmp_path):
    model = model_of("dense", vocab=tok.vocab_size)
    export_onnx(save_model_dir(tmp_path / "model", model, tok), tmp_path / "onnx")
    ort_model = OnnxTransducer(tmp_path / "onnx", threads=1)
    x = torch.randn(3, 100, 80, generator=torch.Generator().manual_seed(4))
    both = np.concatenate(list(ort_model.stream_chunks(x.numpy())), axis=1)
    for b in range(3):
        one = np.concatenate(list(ort_model.stream_chunks(x[b : b + 1].numpy())), axis=1)
        assert np.abs(both[b] - one[0]).max() < 1e-4


def test_export_refuses_unbounded_left_context_and_a_foreign_out_dir(tok, tmp_path):
    model = model_of("dense", vocab=tok.vocab_size, left_chunks=-1)
    src = save_model_dir(tmp_path / "model", model, tok)
    with pytest.raises(ValueError, match="left_chunks >= 0"):
        export_onnx(src, tmp_path / "onnx")
    assert not (tmp_path / "onnx").exists() and not (tmp_path / "onnx.tmp").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not an ONNX export"):
        export_onnx(save_model_dir(tmp_path / "m2", model_of("dense", False, tok.vocab_size), tok),
                    tmp_path / "mine")  # fmt: skip
    assert (tmp_path / "mine" / "notes.txt").exists()
