"""Paired bootstrap intervals on WER differences (Bisani & Ney, ICASSP 2004).

Two systems decoded the same utterances; utterance i has word errors a_i and b_i over r_i
reference words. The difference of corpus WERs is Δ = (Σa − Σb) / Σr. Resampling the
utterances with replacement (the same draw for both systems: that is the pairing) gives
the distribution of Δ under the variation of the test set; its 2.5 and 97.5 percentiles
are the 95 % interval, and a difference is significant when the interval excludes 0.

Several seeds of the same configuration are pooled per utterance (mean errors over seeds)
before resampling, so the utterance stays the unit of resampling and seed noise is
averaged; the seeds' own spread is reported beside it by the callers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

RESAMPLES = 1000  # Bisani & Ney use 10^3–10^4; intervals move by < 0.1 point beyond 1000
LEVEL = 0.95
SEED = 0  # fixed: the same evidence always gives the same interval


@dataclass(frozen=True, kw_only=True)
class PairedDelta:
    """WER(a) − WER(b) with its paired-bootstrap interval; fractions, not %."""

    delta: float  # (Σa − Σb) / Σr on the full set
    low: float  # interval on delta
    high: float
    relative: float  # delta / WER(b)
    rel_low: float  # interval on relative (ratio of resampled sums)
    rel_high: float
    p_better: float  # share of resamples in which a has fewer errors than b
    num_utterances: int
    resamples: int
    level: float

    @property
    def significant(self) -> bool:
        """The interval excludes 0 (two-sided test at 1 − level)."""
        return self.low > 0 or self.high < 0


def paired_bootstrap(
    errors_a: Sequence[float],
    errors_b: Sequence[float],
    ref_words: Sequence[float],
    *,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = SEED,
) -> PairedDelta:
    """Per-utterance errors of systems a and b on the same utterances, in the same order,
    and the utterances' reference word counts -> `PairedDelta` of WER(a) − WER(b)."""
    a, b, r = (np.asarray(x, dtype=np.float64) for x in (errors_a, errors_b, ref_words))
    if not (a.shape == b.shape == r.shape) or a.ndim != 1:
        raise ValueError(
            f"need three equal-length 1-D sequences, got {a.shape}, {b.shape}, {r.shape}"
        )
    if len(a) == 0 or r.sum() <= 0:
        raise ValueError("no utterances with reference words to compare on")
    if resamples < 1 or not 0 < level < 1:
        raise ValueError(f"resamples must be >= 1 and 0 < level < 1, got {resamples}, {level}")
    rng = np.random.default_rng(seed)
    n = len(a)
    d_sum, b_sum, r_sum = np.empty(resamples), np.empty(resamples), np.empty(resamples)
    block = max(1, 4_000_000 // n)  # bound the (block, n) index matrix to ~32 MB
    for start in range(0, resamples, block):
        idx = rng.integers(0, n, size=(min(block, resamples - start), n))
        sl = slice(start, start + len(idx))
        d_sum[sl] = (a - b)[idx].sum(1)
        b_sum[sl] = b[idx].sum(1)
        r_sum[sl] = np.maximum(r[idx].sum(1), 1e-12)
    delta = d_sum / r_sum
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(b_sum > 0, d_sum / b_sum, np.nan)
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(delta, [tail, 100 - tail])
    rel_lo, rel_hi = (
        np.nanpercentile(rel, [tail, 100 - tail]) if np.isfinite(rel).any() else (np.nan, np.nan)
    )
    wer_b = b.sum() / r.sum()
    full = (a.sum() - b.sum()) / r.sum()
    return PairedDelta(
        delta=float(full),
        low=float(lo),
        high=float(hi),
        relative=float(full / wer_b) if wer_b > 0 else float("nan"),
        rel_low=float(rel_lo),
        rel_high=float(rel_hi),
        p_better=float(np.mean(d_sum < 0)),
        num_utterances=n,
        resamples=resamples,
        level=level,
    )


def pool_seeds(runs: Sequence[Mapping[str, tuple[float, float]]]) -> dict[str, tuple[float, float]]:
    """Per-seed `{utterance id: (errors, reference words)}` -> the mean errors over seeds
    per utterance. Every seed must have decoded the same utterances."""
    if not runs:
        raise ValueError("no runs to pool")
    ids = set(runs[0])
    for i, run in enumerate(runs[1:], 1):
        if set(run) != ids:
            diff = sorted(ids ^ set(run))[:3]
            raise ValueError(f"run {i} decoded other utterances than run 0 (e.g. {diff})")
    return {
        u: (float(np.mean([run[u][0] for run in runs])), float(runs[0][u][1])) for u in sorted(ids)
    }


def compare_pooled(
    a: Mapping[str, tuple[float, float]], b: Mapping[str, tuple[float, float]], **kw
) -> PairedDelta:
    """`paired_bootstrap` of two pooled `{utterance id: (errors, words)}` maps, paired by id."""
    common = sorted(set(a) & set(b))
    if len(common) != len(a) or len(common) != len(b):
        raise ValueError(
            f"the two systems decoded different utterances ({len(a)} vs {len(b)}, "
            f"{len(common)} in common)"
        )
    return paired_bootstrap(
        [a[u][0] for u in common], [b[u][0] for u in common], [a[u][1] for u in common], **kw
    )
