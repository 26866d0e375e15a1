from kdprune.data.tokenizer import Tokenizer, train_tokenizer


def test_tokenizer_round_trip(tmp_path):
    texts = [
        f"turn {w} the {r} lights" for w in ("on", "off") for r in ("kitchen", "bedroom", "garage")
    ] * 5
    tok = train_tokenizer(texts, tmp_path / "t.model", vocab_size=30)
    assert tok.vocab_size <= 30
    for t in texts[:6] + ["the garage lights"]:
        ids = tok.encode(t)
        assert all(0 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == t
    again = Tokenizer(tmp_path / "t.model")
    assert again.encode("turn on the kitchen lights") == tok.encode("turn on the kitchen lights")
