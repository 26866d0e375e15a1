"""torchaudio's rnnt_loss against an independent forward-algorithm implementation, and decoding."""

import math

import torch
import torchaudio.functional as AF

from kdprune.eval.wer import corpus_wer, edit_distance


def rnnt_nll_reference(logits: torch.Tensor, target: list[int], blank: int) -> float:
    """Forward algorithm over the (T, U+1) lattice in float64 for one utterance."""
    logp = torch.log_softmax(logits.double(), -1)
    t_len, u1, _ = logp.shape
    alpha = torch.full((t_len, u1), -math.inf, dtype=torch.float64)
    alpha[0, 0] = 0.0
    for t in range(t_len):
        for u in range(u1):
            if t == 0 and u == 0:
                continue
            a = -math.inf
            if t > 0:
                a = alpha[t - 1, u] + logp[t - 1, u, blank]
            if u > 0:
                a = torch.logaddexp(
                    torch.tensor(a, dtype=torch.float64),
                    alpha[t, u - 1] + logp[t, u - 1, target[u - 1]],
                )
            alpha[t, u] = a
    return float(-(alpha[t_len - 1, u1 - 1] + logp[t_len - 1, u1 - 1, blank]))


def test_rnnt_loss_matches_forward_algorithm():
    torch.manual_seed(0)
    v = 6  # classes incl. blank (last)
    lens, ulens = [7, 5], [3, 2]
    logits = torch.randn(2, 7, 4, v)
    targets = torch.tensor([[1, 2, 3], [4, 0, 0]], dtype=torch.int32)
    per = AF.rnnt_loss(
        logits,
        targets,
        torch.tensor(lens, dtype=torch.int32),
        torch.tensor(ulens, dtype=torch.int32),
        blank=v - 1,
        reduction="none",
    )
    for b in range(2):
        ref = rnnt_nll_reference(
            logits[b, : lens[b], : ulens[b] + 1], targets[b, : ulens[b]].tolist(), v - 1
        )
        assert abs(float(per[b]) - ref) < 1e-4
    mean = AF.rnnt_loss(
        logits,
        targets,
        torch.tensor(lens, dtype=torch.int32),
        torch.tensor(ulens, dtype=torch.int32),
        blank=v - 1,
    )
    assert torch.allclose(mean, per.mean())


def test_wer():
    assert edit_distance("a b c".split(), "a x c d".split()) == 2
    wer, err, words = corpus_wer(["a b c", "d e"], ["a b", "d e f"])
    assert (err, words) == (2, 5) and abs(wer - 0.4) < 1e-12
