"""RNN-T decoding: batched greedy search and per-utterance (modified) beam search."""

from __future__ import annotations

import torch

from kdprune.models.transducer import Transducer


@torch.inference_mode()
def greedy_decode(
    model: Transducer, enc: torch.Tensor, enc_lens: torch.Tensor, max_symbols: int = 3
) -> list[list[int]]:
    """enc (B, T, D) -> token ids per utterance; at most `max_symbols` emissions per frame."""
    b, t, _ = enc.shape
    blank = model.cfg.blank
    enc_p = model.joiner.enc_proj(enc)  # (B, T, J)
    tokens = torch.full((b, 1), blank, dtype=torch.long, device=enc.device)
    pred, state = model.predictor(tokens)
    pred_p = model.joiner.pred_proj(pred[:, 0])  # (B, J)
    hyps: list[list[int]] = [[] for _ in range(b)]
    for ti in range(t):
        active = enc_lens > ti
        for _ in range(max_symbols):
            logits = model.joiner.out(torch.tanh(enc_p[:, ti] + pred_p))
            best = logits.argmax(-1)
            emit = active & (best != blank)
            if not bool(emit.any()):
                break
            new_pred, new_state = model.predictor(best[:, None], state)
            m = emit[:, None]
            pred_p = torch.where(m, model.joiner.pred_proj(new_pred[:, 0]), pred_p)
            state = tuple(
                torch.where(m[None], ns, s) for ns, s in zip(new_state, state, strict=True)
            )
            for i in emit.nonzero().flatten().tolist():
                hyps[i].append(int(best[i]))
    return hyps


@torch.inference_mode()
def beam_decode(model: Transducer, enc: torch.Tensor, enc_len: int, beam: int = 4) -> list[int]:
    """Modified beam search (one symbol per frame at most) for one utterance enc (T, D).

    Each hypothesis keeps its predictor state; hypotheses reaching the same label sequence
    are merged by log-sum-exp of their scores.
    """
    blank = model.cfg.blank
    enc_p = model.joiner.enc_proj(enc[:enc_len])
    start = torch.full((1, 1), blank, dtype=torch.long, device=enc.device)
    pred, state = model.predictor(start)
    # hyp: tokens tuple -> (log prob, pred projection (J,), state)
    hyps = {(): (0.0, model.joiner.pred_proj(pred[0, 0]), state)}
    for ti in range(enc_p.shape[0]):
        keys = list(hyps)
        pp = torch.stack([hyps[k][1] for k in keys])  # (H, J)
        logp = torch.log_softmax(model.joiner.out(torch.tanh(enc_p[ti][None] + pp)), -1)
        base = torch.tensor([hyps[k][0] for k in keys], device=enc.device)[:, None]
        scores = (base + logp).flatten()
        top = torch.topk(scores, min(beam, scores.numel()))
        new: dict[tuple[int, ...], tuple[float, torch.Tensor, tuple]] = {}
        for score, idx in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            h, tok = divmod(idx, logp.shape[1])
            key = keys[h]
            _, p_proj, st = hyps[key]
            if tok != blank:
                out, st = model.predictor(torch.tensor([[tok]], device=enc.device), st)
                p_proj = model.joiner.pred_proj(out[0, 0])
                key = key + (tok,)
            if key in new:
                old = new[key]
                new[key] = (
                    float(torch.logaddexp(torch.tensor(old[0]), torch.tensor(score))),
                    old[1],
                    old[2],
                )
            else:
                new[key] = (score, p_proj, st)
        hyps = new
    best = max(hyps.items(), key=lambda kv: kv[1][0])
    return list(best[0])
