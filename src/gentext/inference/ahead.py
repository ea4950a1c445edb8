"""Tokens drawn ahead: a cohort's rows under plain settings take up to AHEAD tokens in one call of the
model's compiled run (`draw_ahead`: the recurrent kinds, minGRU, their mixtures), drawn and read
without Python between them, then decoded and sent one by one as the engine's steps would: the same
ids, the same events. Per token the Python between the calls cost about as much as one row's
compiled step, and a tenth of a 64-row one (benchmarks/RESULTS.md).

- one request (`alone`): a lone row, or a request's samples (greedy, or drawing float32 numbers);
- requests together (`together`): every request of the cohort under the same plain settings
  (`Sampler.plain_key`), each row's numbers from its own request's generator, as the token-by-token
  group draw takes them (`cohort._draw_group`; greedy ones draw none), for as many tokens as the
  request nearest its end may take.
"""

from __future__ import annotations

import torch

from gentext.inference.jobs import Job
from gentext.inference.sampler import float32_uniforms


def alone(model, cohort, job: Job, advance) -> bool:
    """One request's rows: False where the model has no compiled run or the job must choose each
    token (the rows then step token by token, to the same ids). `advance(job, ids)` decodes and sends
    a step's text (None once the job ended)."""
    count, run = job.ahead(), getattr(model, "draw_ahead", None)
    if count < 2 or run is None:
        return False
    more = count < job.config.max_new_tokens - job.steps  # else the last token is never read
    ran = run(cohort.logits, cohort.state, count, job.sampler, job.generator, job.end_id, more)
    if ran is None:
        return False
    ids, cohort.logits, cohort.state = ran
    for chosen in ids.tolist() if isinstance(ids, torch.Tensor) else ([token] for token in ids):
        if advance(job, chosen) is None:
            cohort.jobs = []
            break
    return True


def together(model, cohort, advance) -> bool:
    """Every request of the cohort under the same plain settings (`Sampler.plain_key`: drawing, or
    greedy) in one run: False where one cannot, the model has no compiled run, or a request was
    just admitted (its first token comes from one step, so that joining a busy batch does not hold
    it back by a whole run). Jobs that end within the run leave the cohort after it;
    each row's numbers are its own."""
    jobs, run, sampler = cohort.jobs, getattr(model, "draw_ahead", None), cohort.jobs[0].sampler
    key = sampler.plain_key
    if run is None or key is None or (sampler.temperature != 0 and not float32_uniforms()):
        return False  # (the kernels draw float32 numbers)
    if any(job.origin is not None or job.sampler.plain_key != key or job.steps == 0 for job in jobs):
        return False  # a request just admitted gets its first token from one step, not a run's end
    count = min(job.ahead() for job in jobs)
    if count < 2:
        return False
    more = any(count < job.config.max_new_tokens - job.steps for job in jobs)
    source = ([job.generator for job in jobs], [job.rows for job in jobs])
    ran = run(cohort.logits, cohort.state, count, sampler, source, jobs[0].end_id, more)
    if ran is None:
        return False
    ids, logits, state = ran
    steps, kept, rows, start = ids.tolist(), [], [], 0
    for job in jobs:
        mine = slice(start, start + job.rows)
        if all(advance(job, step[mine]) is not None for step in steps):  # stops at the job's end
            kept.append(job)
            rows.extend(range(mine.start, mine.stop))
        start += job.rows
    cohort.jobs = kept
    if len(kept) < len(jobs) and kept:
        chosen = torch.tensor(rows, device=logits.device)
        logits, state = logits.index_select(0, chosen), state.select(chosen)
    cohort.logits, cohort.state = logits, state
    return True
