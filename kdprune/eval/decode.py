"""RNN-T decoding: batched greedy search and per-utterance (modified) beam search."""

from __future__ import annotations

import torch

from kdprune.models.transducer import Transducer


@torch.inference_mode()
def greedy_decode(
    model: Transducer, enc: torch.Tensor, enc_lens: torch.Tensor, max_symbols: int = 10
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
def beam_decode(
    model: Transducer, enc: torch.Tensor, enc_len: int, beam: int = 4, max_symbols: int = 10
) -> list[int]:
    """Beam search for one utterance enc (T, D), up to `max_symbols` emissions per frame.

    Per frame: hypotheses in `active` are extended by blank (they move to the next frame,
    into `done`) or by a label (they stay in `active`); identical label sequences are
    merged by log-sum-exp. Each hypothesis keeps its own predictor state.
    """
    blank = model.cfg.blank
    dev = enc.device
    enc_p = model.joiner.enc_proj(enc[:enc_len])
    pred, state = model.predictor(torch.full((1, 1), blank, dtype=torch.long, device=dev))
    # tokens -> (log prob, predictor projection (J,), predictor state)
    hyps: dict[tuple[int, ...], tuple[float, torch.Tensor, tuple]] = {
        (): (0.0, model.joiner.pred_proj(pred[0, 0]), state)
    }

    def merge(
        table: dict, key: tuple[int, ...], score: float, proj: torch.Tensor, st: tuple
    ) -> None:
        if key in table:
            old = table[key]
            table[key] = (
                float(torch.logaddexp(torch.tensor(old[0]), torch.tensor(score))),
                old[1],
                old[2],
            )
        else:
            table[key] = (score, proj, st)

    for ti in range(enc_p.shape[0]):
        active, done = hyps, {}
        for _ in range(max_symbols):
            if not active:
                break
            keys = list(active)
            pp = torch.stack([active[k][1] for k in keys])
            logp = torch.log_softmax(model.joiner.out(torch.tanh(enc_p[ti][None] + pp)), -1)
            base = torch.tensor([active[k][0] for k in keys], device=dev)
            for h, k in enumerate(keys):
                merge(done, k, float(base[h] + logp[h, blank]), active[k][1], active[k][2])
            labels = logp.clone()
            labels[:, blank] = float("-inf")
            scores = (base[:, None] + labels).flatten()
            top = torch.topk(scores, min(beam, scores.numel()))
            floor = sorted((v[0] for v in done.values()), reverse=True)[:beam][-1]
            nxt: dict = {}
            for score, idx in zip(top.values.tolist(), top.indices.tolist(), strict=True):
                if len(done) >= beam and score < floor:
                    continue  # cannot enter the beam of finished-at-this-frame hypotheses
                h, tok = divmod(idx, logp.shape[1])
                out, st = model.predictor(torch.tensor([[tok]], device=dev), active[keys[h]][2])
                merge(nxt, keys[h] + (tok,), score, model.joiner.pred_proj(out[0, 0]), st)
            active = nxt
        hyps = dict(sorted(done.items(), key=lambda kv: kv[1][0], reverse=True)[:beam])
    return list(max(hyps.items(), key=lambda kv: kv[1][0])[0])


class GreedyStream:
    """Incremental greedy RNN-T decoding for one utterance (streaming): feed encoder
    frames as they arrive; the hypothesis grows. Same result as `greedy_decode`."""

    def __init__(self, model: Transducer, max_symbols: int = 10) -> None:
        self.model, self.max_symbols = model, max_symbols
        blank = model.cfg.blank
        dev = next(model.parameters()).device
        with torch.inference_mode():
            pred, self.state = model.predictor(
                torch.full((1, 1), blank, dtype=torch.long, device=dev)
            )
            self.pred_p = model.joiner.pred_proj(pred[:, 0])
        self.hyp: list[int] = []

    @torch.inference_mode()
    def feed(self, enc: torch.Tensor) -> list[int]:
        """enc (1, M, D) -> the hypothesis so far."""
        m = self.model
        enc_p = m.joiner.enc_proj(enc)
        for ti in range(enc_p.shape[1]):
            for _ in range(self.max_symbols):
                best = int(m.joiner.out(torch.tanh(enc_p[:, ti] + self.pred_p)).argmax(-1))
                if best == m.cfg.blank:
                    break
                self.hyp.append(best)
                out, self.state = m.predictor(torch.tensor([[best]], device=enc.device), self.state)
                self.pred_p = m.joiner.pred_proj(out[:, 0])
        return self.hyp
