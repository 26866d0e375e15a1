"""Word error rate: word-level Levenshtein distance summed over a set / reference words."""

from __future__ import annotations


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def corpus_wer(refs: list[str], hyps: list[str]) -> tuple[float, int, int]:
    """-> (wer, total errors, total reference words); wer = errors / reference words.

    When every reference is empty (0 reference words) the ratio is undefined; as jiwer
    >= 4.0 does, wer is then the error count itself, i.e. the number of inserted words
    (0.0 when every hypothesis is empty too), so a model that "hears" words in silence
    is not reported as perfect.
    """
    errors = sum(edit_distance(r.split(), h.split()) for r, h in zip(refs, hyps, strict=True))
    words = sum(len(r.split()) for r in refs)
    return (errors / words if words else float(errors)), errors, words
