"""Word error rate: the edit distance, corpus totals, and the empty-reference convention
(jiwer >= 4.0's, worked out by hand here: jiwer is not a dependency)."""

import pytest

from kdprune.eval.wer import corpus_wer, edit_distance


def test_wer():
    assert edit_distance("a b c".split(), "a x c d".split()) == 2
    wer, err, words = corpus_wer(["a b c", "d e"], ["a b", "d e f"])
    assert (err, words) == (2, 5) and abs(wer - 0.4) < 1e-12


def test_empty_reference_inside_a_corpus_adds_its_insertions():
    # "a b" vs "a b": 0 errors; "" vs "x y": 2 insertions; 2 reference words in all.
    assert corpus_wer(["a b", ""], ["a b", "x y"]) == (1.0, 2, 2)


@pytest.mark.parametrize(
    ("hyps", "expected"),
    [
        (["", ""], (0.0, 0, 0)),  # silence recognised as silence: no error
        (["silence", ""], (1.0, 1, 0)),  # jiwer.wer("", "silence") == 1
        (["peaceful silence", "x"], (3.0, 3, 0)),  # every hypothesis word is an insertion
    ],
)
def test_all_empty_references_count_insertions(hyps, expected):
    assert corpus_wer(["", "  "], hyps) == expected


def test_lengths_must_match():
    with pytest.raises(ValueError):
        corpus_wer(["a"], ["a", "b"])
