"""`kdprune.train.losses.asr_loss` against an independent float64 RNN-T forward algorithm.

A tiny random Transducer runs in float64 on a padded batch of utterances of different
lengths. The reference runs the same model on each utterance alone (unpadded), takes the
joiner's log-softmax and sums the alignment lattice (T, U+1) with the log-space alpha
recursion; `asr_loss` must give the mean of those negative log-likelihoods. So the test
checks what `asr_loss` wires up: the blank id, encoder and target lengths under padding,
the predictor's start symbol and the per-utterance mean; and that the CTC term adds on.
"""

import math

import pytest
import torch
from conftest import tiny_model_config

from kdprune.data.batching import Batch
from kdprune.models.transducer import Transducer
from kdprune.train.losses import asr_loss, joint_bytes, sub_batches

VOCAB = 7  # blank is id 7, the last class


def rnnt_nll(logp: torch.Tensor, target: list[int], blank: int) -> float:
    """-log P(target | x) by the forward algorithm; logp (T, U+1, V+1) float64 log-probs.

    alpha[t, u] = log P(first u labels emitted, at frame t); a blank moves t → t+1, label
    u+1 moves u → u+1 within frame t; the path ends with a blank from (T−1, U).
    """
    t_len, u1, _ = logp.shape
    assert u1 == len(target) + 1
    alpha = torch.full((t_len, u1), -math.inf, dtype=torch.float64)
    alpha[0, 0] = 0.0
    for t in range(t_len):
        for u in range(u1):
            paths = []
            if t > 0:
                paths.append(alpha[t - 1, u] + logp[t - 1, u, blank])
            if u > 0:
                paths.append(alpha[t, u - 1] + logp[t, u - 1, target[u - 1]])
            if paths:
                alpha[t, u] = torch.logsumexp(torch.stack(paths), 0)
    return float(-(alpha[t_len - 1, u1 - 1] + logp[t_len - 1, u1 - 1, blank]))


def tiny_transducer() -> Transducer:
    torch.manual_seed(0)
    return Transducer(tiny_model_config(VOCAB, dropout=0.0)).double().eval()


def padded_batch(feat_lens: list[int], targets: list[list[int]]) -> Batch:
    gen = torch.Generator().manual_seed(1)
    feats = torch.zeros(len(feat_lens), max(feat_lens), 80, dtype=torch.float64)
    for i, n in enumerate(feat_lens):
        feats[i, :n] = torch.randn(n, 80, generator=gen, dtype=torch.float64)
    tokens = torch.zeros(len(targets), max(map(len, targets)), dtype=torch.long)  # pad: 0
    for i, y in enumerate(targets):
        tokens[i, : len(y)] = torch.tensor(y)
    return Batch(
        feats=feats,
        feat_lens=torch.tensor(feat_lens),
        targets=tokens,
        target_lens=torch.tensor([len(y) for y in targets]),
        texts=[""] * len(targets),
        indices=list(range(len(targets))),
    )


@torch.no_grad()
def reference_nll(model: Transducer, feats: torch.Tensor, target: list[int]) -> float:
    """One utterance alone: (T, F) features, its labels."""
    enc = model.encode(feats[None], torch.tensor([feats.shape[0]]))
    pred = model.predict(torch.tensor([target], dtype=torch.long).reshape(1, -1))
    logp = torch.log_softmax(model.joiner(enc.out, pred)[0], -1)  # (T', U+1, V+1)
    return rnnt_nll(logp, target, model.cfg.blank)


@pytest.mark.parametrize("ctc_weight", [0.0, 0.3])
def test_asr_loss_is_the_mean_forward_algorithm_nll(ctc_weight):
    model = tiny_transducer()
    lens = [90, 61, 37, 45]  # 21, 14, 8, 10 encoder frames
    targets = [[1, 4, 0, 6, 2], [3, 3, 5], [6, 0], [2]]
    batch = padded_batch(lens, targets)
    with torch.no_grad():
        out = asr_loss(model, batch, batch.feats, ctc_weight)
    ref = [
        reference_nll(model, batch.feats[i, :n], y)
        for i, (n, y) in enumerate(zip(lens, targets, strict=True))
    ]
    assert max(ref) > min(ref) + 1.0  # the utterances differ: a mix-up would show
    expected = sum(ref) / len(ref)
    assert abs(float(out.rnnt) - expected) <= 1e-5 * expected, (float(out.rnnt), expected)
    assert out.enc.out.shape[:2] == (4, 21) and out.enc.lengths.tolist() == [21, 14, 8, 10]
    if ctc_weight:
        assert float(out.ctc) > 0
    else:
        assert float(out.ctc) == 0.0
    assert torch.allclose(out.loss, out.rnnt + ctc_weight * out.ctc)


def test_sub_batched_joint_equals_the_whole_batch_loss_and_gradients():
    """A joint budget that splits the batch into one group per utterance or two gives the
    whole batch's loss and every parameter's gradient (rel. error <= 1e-5), and the
    groups are what the budget allows."""
    torch.manual_seed(0)
    model = Transducer(tiny_model_config(VOCAB, dropout=0.0)).train()
    lens = [90, 61, 37, 45, 80, 20]
    targets = [[1, 4, 0, 6, 2], [3, 3, 5], [6, 0], [2], [5, 5, 1, 1], [4]]
    batch = padded_batch(lens, targets)
    feats = batch.feats.float()

    def loss_and_grads(budget_mb):
        model.zero_grad()
        out = asr_loss(model, batch, feats, 0.3, joint_budget_mb=budget_mb)
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return out.rnnt.detach(), grads, out.enc.lengths

    full, g_full, enc_lens = loss_and_grads(1e6)
    cell = joint_bytes(1, 1, 1, model)
    # Room for the longest utterance alone, then for about two utterances at a time.
    longest = int(enc_lens.max()) * (max(map(len, targets)) + 1) * cell / 2**20
    for budget in (longest, 2.2 * longest):
        groups = sub_batches(enc_lens, batch.target_lens, model, budget)
        assert 2 <= len(groups) <= 6 and sorted(torch.cat(groups).tolist()) == list(range(6))
        for g in groups:  # each group fits, unless it is one utterance
            t, u = int(enc_lens[g].max()), int(batch.target_lens[g].max()) + 1
            assert len(g) == 1 or joint_bytes(len(g), t, u, model) <= budget * 2**20
        part, g_part, _ = loss_and_grads(budget)
        assert abs(float(part) - float(full)) <= 1e-5 * float(full)
        assert g_part.keys() == g_full.keys()
        for name, g in g_full.items():
            err = (g_part[name] - g).norm() / g.norm().clamp(min=1e-12)
            assert err <= 1e-5, (name, float(err))
