"""Beam search: the most likely continuations, deterministically, on the same model contract.

Hypotheses advance together as rows of one state (`State.select` follows each kept hypothesis);
finished ones are ranked by total log-probability / length ** length_penalty, and the search
stops only when no live hypothesis can still beat the kept ones (`_settled`).
"""

from __future__ import annotations

import dataclasses
import time

import torch

from gentext import threads
from gentext.inference.sampling import NEG_INF, apply_constraints, prime
from gentext.useconfig import SampleConfig


def beam_search(
    model: torch.nn.Module,
    prompt_ids: list[int],
    config: SampleConfig,
    end_id: int | None = None,
    suppress: list[int] | None = None,
    condition=None,
) -> list[list[int]]:
    """Deterministic beam search; returns `num_samples` continuations, best first.

    Hypotheses are ranked by total log-probability / length ** length_penalty (Wu et al. 2016;
    not given: 1), so finished short ones compete fairly with long ones. One beam is exactly greedy.
    """
    beams = config.num_beams
    if config.length_penalty is None:
        config = dataclasses.replace(config, length_penalty=1.0)
    with torch.inference_mode():
        logits, state = prime(model, prompt_ids, 1, condition)  # start from one hypothesis, not `beams` copies
        device = logits.device
        seqs = torch.empty(1, 0, dtype=torch.long, device=device)
        scores = torch.zeros(1, device=device)
        finished: list[tuple[float, list[int]]] = []
        prompt = torch.tensor(prompt_ids, dtype=torch.long, device=device)
        deadline = None if config.max_time is None else time.monotonic() + config.max_time
        for step in range(config.max_new_tokens):
            if deadline is not None and time.monotonic() > deadline:
                break  # --max-time: the hypotheses so far are ranked as they stand
            threads.tick()
            history = torch.cat([prompt[None].expand(seqs.shape[0], -1), seqs], dim=1)
            logits = apply_constraints(logits, config, history, suppress)
            candidates = scores[:, None] + torch.log_softmax(logits, dim=-1)  # (K, V)
            vocab = candidates.shape[1]
            top_scores, flat = candidates.flatten().topk(min(beams, candidates.numel()))
            origin, token = flat // vocab, flat % vocab
            keep = torch.isfinite(top_scores)
            origin, token, top_scores = origin[keep], token[keep], top_scores[keep]
            seqs = torch.cat([seqs[origin], token[:, None]], dim=1)
            state = state.select(origin)
            scores = top_scores
            if end_id is not None:
                ended = token == end_id
                for i in ended.nonzero().flatten().tolist():
                    length = step + 1
                    finished.append((scores[i].item() / length**config.length_penalty, seqs[i].tolist()))
                scores = scores.masked_fill(ended, NEG_INF)
                if not torch.isfinite(scores).any() or _settled(finished, scores, step + 1, config):
                    break
            if seqs.shape[0] == 0:
                break
            logits, state = model(token[:, None], state)
            logits = logits[:, -1]
        length = max(seqs.shape[1], 1)
        for i in torch.isfinite(scores).nonzero().flatten().tolist():
            finished.append((scores[i].item() / length**config.length_penalty, seqs[i].tolist()))
    finished.sort(key=lambda item: -item[0])
    return [ids for _, ids in finished[: config.num_samples]]


def _settled(finished: list[tuple[float, list[int]]], scores: torch.Tensor, length: int, config: SampleConfig) -> bool:
    """Can no live hypothesis still beat the `num_beams` best finished ones? (Stopping once that many
    had finished, early junk included, ranked a truncated live one first: beams lost to greedy.) The
    bound is optimistic: a live score only falls, at best spread over the longest length it may reach."""
    if len(finished) < config.num_beams:
        return False
    kept = sorted((score for score, _ in finished), reverse=True)[config.num_beams - 1]
    penalty = config.length_penalty
    reach = config.max_new_tokens if penalty > 0 else length
    return kept >= scores.max().item() / reach**penalty
