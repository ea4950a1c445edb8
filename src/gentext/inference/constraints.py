"""Constrained output: only text that matches a regular expression or a JSON schema.

outlines-core compiles the pattern (a JSON schema first into its regular expression) into an index
over the run's vocabulary: from each state of the pattern's automaton, which token ids may come
next and the state each leads to. Chosen over xgrammar by measurement (benchmarks/RESULTS.md,
"Which library"): on a character and a byte-level BPE vocabulary it compiled in milliseconds and
wrote valid text on both, where xgrammar, given the same raw token bytes, let samples run past the
end of the pattern.

`Constraint` is one more logits processor (processors.py): each row's state lives in the request's
`History` (so beams carry theirs when rows are re-selected), every token the state does not allow
is made impossible, and a row whose pattern is complete with nothing allowed after it is left
without a token, which ends its sample ("stop"). Character and byte-level BPE vocabularies have
fixed bytes per token; a word vocabulary's spacing depends on the neighbours, so it is refused.
"""

from __future__ import annotations

import functools
import json
import re
import threading

import torch

from gentext.errors import GentextError
from gentext.inference.processors import NEG_INF, History


def token_bytes(tokenizer) -> list[bytes]:
    """The bytes each id writes, for vocabularies whose tokens always write the same bytes."""
    if tokenizer.level == "char":
        return [c.encode("utf-8") for c in tokenizer.chars]
    if tokenizer.level == "bpe":
        return list(tokenizer.decoder().token_bytes)
    raise GentextError("constrained output (--regex, --json-schema) needs a character or byte-level BPE run")


def pattern_of(regex: str | None, json_schema: str | None) -> str | None:
    """The regular expression a request asks for (a JSON schema turned into one), or None."""
    if json_schema is None:
        return regex
    from outlines_core.json_schema import build_regex_from_schema

    try:
        json.loads(json_schema)
        return build_regex_from_schema(json_schema)
    except (ValueError, TypeError) as exc:
        raise GentextError(f"--json-schema: not a JSON schema outlines-core can compile ({exc})") from None


class Constraint:
    """The processor of one compiled pattern (shared by every request that asks for it)."""

    constraint = True  # beams apply it too
    stateful = True  # its per-row state lives in the History

    def __init__(self, index, vocab: int):
        self.index, self.vocab = index, vocab
        self.initial = index.get_initial_state()
        self.lock = threading.Lock()

    def allowed(self, state: int) -> list[int]:
        with self.lock:
            return [t for t in self.index.get_allowed_tokens(state) if t < self.vocab]  # the end marker: not a token

    def advance(self, states: list[int], ids: list[int]) -> list[int]:
        """Each row's state after its new token (a row that ended keeps its state)."""
        out = []
        with self.lock:
            for state, token in zip(states, ids, strict=True):
                nxt = self.index.get_next_state(state, token) if 0 <= token < self.vocab else None
                out.append(state if nxt is None else nxt)
        return out

    def complete(self, state: int) -> bool:
        """Does the text so far match the whole pattern?"""
        with self.lock:
            return self.index.is_final_state(state)

    def __call__(self, logits: torch.Tensor, history: History) -> torch.Tensor:
        keep = torch.zeros(logits.shape, dtype=torch.bool, device=logits.device)
        for row, state in enumerate(history.states):
            allowed = self.allowed(state)
            if allowed:
                keep[row, allowed] = True
        return logits.masked_fill(~keep, NEG_INF)


def compile_for(tokenizer, suppressed: list[int], regex: str | None, json_schema: str | None) -> Constraint | None:
    """The request's constraint over this vocabulary (None when it asks for none); a pattern the
    vocabulary cannot start to write is a one-line error before any work."""
    pattern = pattern_of(regex, json_schema)
    if pattern is None:
        return None
    _check_size(pattern)
    constraint = _compiled(tokenizer, tuple(suppressed), pattern)
    if not constraint.allowed(constraint.initial):
        raise GentextError("this run's vocabulary cannot write any text that matches the pattern")
    return constraint


MAX_EXPANSION = 100_000  # positions a pattern may spell out through counted repeats


def _check_size(pattern: str) -> None:
    """Refuse a pattern whose counted repeats multiply out past MAX_EXPANSION (`.{1000000}` would
    build an automaton of a million states), before the compiler is asked: one request must not
    hold the server. Read with Python's own regex parser; what it cannot parse outlines-core judges."""
    try:
        import re._parser as sre  # the parser `re` itself uses (sre_parse before Python 3.11)
    except ImportError:  # pragma: no cover
        import sre_parse as sre
    try:
        tree = sre.parse(pattern)
    except (re.error, RecursionError, OverflowError):
        return

    def size(items) -> int:
        total = 0
        for op, arg in items:
            if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
                low, high, sub = arg
                total += max(low, 1 if high == sre.MAXREPEAT else high) * max(size(sub), 1)
            elif op == sre.SUBPATTERN:
                total += size(arg[-1])
            elif op == sre.BRANCH:
                total += max((size(branch) for branch in arg[1]), default=0)
            else:
                total += 1
            if total > MAX_EXPANSION:
                raise GentextError(f"the pattern spells out more than {MAX_EXPANSION:,} positions; use fewer repeats")
        return total

    size(tree)


@functools.lru_cache(maxsize=64)
def _compiled(tokenizer, suppressed: tuple[int, ...], pattern: str) -> Constraint:
    try:
        from outlines_core import Index, Vocabulary
    except ImportError:
        raise GentextError("constrained output needs outlines-core: pip install outlines-core") from None
    by_bytes: dict[bytes, list[int]] = {}
    never = set(suppressed)
    pieces = token_bytes(tokenizer)
    for token, piece in enumerate(pieces):
        if token not in never and piece:
            by_bytes.setdefault(piece, []).append(token)
    try:
        index = Index(pattern, Vocabulary(len(pieces), by_bytes))  # id len(pieces): the end, never a token
    except (ValueError, RuntimeError) as exc:
        if "incompatible" in str(exc):  # the pattern needs bytes no token of this vocabulary writes
            raise GentextError("this run's vocabulary cannot write any text that matches the pattern") from None
        raise GentextError(f"the pattern cannot be compiled: {str(exc).splitlines()[0]}") from None
    return Constraint(index, len(pieces))
