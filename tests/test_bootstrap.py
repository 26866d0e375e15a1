"""Paired bootstrap on WER differences, checked against closed forms."""

import numpy as np
import pytest

from kdprune.analysis.bootstrap import compare_pooled, paired_bootstrap, pool_seeds


def test_matches_the_closed_form_sampling_distribution():
    """With one reference word per utterance, a resampled Δ is the mean of N draws of the
    per-utterance differences d: its sd is exactly sd_pop(d)/sqrt(N), and by the CLT its
    95 % interval is mean ± 1.96 of that."""
    rng = np.random.default_rng(7)
    n = 400
    a = rng.integers(0, 2, n)
    b = rng.integers(0, 2, n) * (rng.random(n) < 0.7)
    d = (a - b).astype(float)
    res = paired_bootstrap(a, b, np.ones(n), resamples=4000, seed=3)
    sd = d.std() / np.sqrt(n)
    assert res.delta == pytest.approx(d.mean())
    half = 1.96 * sd
    assert res.low == pytest.approx(d.mean() - half, abs=0.12 * half)
    assert res.high == pytest.approx(d.mean() + half, abs=0.12 * half)
    assert (res.high - res.low) / (2 * half) == pytest.approx(1.0, rel=0.08)
    # P(Δ* < 0) from the normal approximation
    from math import erf, sqrt

    p_norm = 0.5 * (1 + erf((0 - d.mean()) / (sd * sqrt(2))))
    assert res.p_better == pytest.approx(p_norm, abs=0.05)


def test_significance_and_symmetry():
    n = 300
    b = np.full(n, 2.0)
    a = b.copy()
    a[:60] -= 1  # a makes 60 fewer errors on 3000 words: -2 points
    words = np.full(n, 10.0)
    res = paired_bootstrap(a, b, words)
    assert res.delta == pytest.approx(-0.02) and res.relative == pytest.approx(-0.1)
    assert res.high < 0 and res.significant and res.p_better == 1.0
    flipped = paired_bootstrap(b, a, words)
    assert flipped.delta == pytest.approx(0.02)
    assert flipped.low == pytest.approx(-res.high) and flipped.high == pytest.approx(-res.low)
    same = paired_bootstrap(b, b, words)
    assert (same.delta, same.low, same.high, same.significant) == (0.0, 0.0, 0.0, False)
    noisy = paired_bootstrap(np.r_[a[:1] + 5, b[1:]], b, words)  # one utterance differs
    assert noisy.low == 0.0 and not noisy.significant  # one utterance is no evidence
    assert paired_bootstrap(a, b, words) == res  # fixed seed: the same interval every time


def test_pooling_seeds_is_a_per_utterance_mean_and_pairs_by_id():
    s0 = {"u1": (2, 10), "u2": (0, 5)}
    s1 = {"u1": (4, 10), "u2": (1, 5)}
    pooled = pool_seeds([s0, s1])
    assert pooled == {"u1": (3.0, 10.0), "u2": (0.5, 5.0)}
    base = {"u2": (1.0, 5.0), "u1": (3.0, 10.0)}  # other order: paired by id
    res = compare_pooled(pooled, base, resamples=200)
    assert res.delta == pytest.approx(-0.5 / 15)
    with pytest.raises(ValueError, match="other utterances"):
        pool_seeds([s0, {"u1": (1, 10)}])
    with pytest.raises(ValueError, match="different utterances"):
        compare_pooled(pooled, {"u1": (1.0, 10.0)})
    with pytest.raises(ValueError, match="equal-length"):
        paired_bootstrap([1, 2], [1], [3, 3])
