"""Defaults that fit the corpus: how much to regularise, from how often the run will see the text.

A network that sees a book-sized text fifty times memorises it: on a 100 KB play the default LSTM
without dropout reaches its best held-out loss after a fifth of a 3-minute run, its training loss
still falling to 0.8 nats/char, and loses to an order-7 Markov chain (1.547 vs 1.497 nats/char); with
dropout 0.3 it keeps improving to the end and wins (1.424). On Tiny Shakespeare a 10-minute run sees
the text five times and dropout only slows it. So when --dropout is not given, it is chosen from the
planned passes over the training tokens:

    dropout = clamp(0.07 * log2(passes / 2), 0, 0.4)     2 passes: 0, 8: 0.14, 50: 0.33, 104+: 0.4

(fitted on one play and checked on another, RESULTS.md: at 50 passes 0.3 beat 0.5 and 0).

Passes are known for --steps and --epochs; for --time-limit they are estimated from a reference speed
(REFERENCE_TOKENS_PER_S for the default model on a 2-core CPU, scaled down for bigger models), so
a machine several times faster or slower shifts the choice by a step or two of the table. The choice
and its reason are logged and saved in config.json; the best validation weights are kept
(`eval_every`), so a run that still overfits late loses only time.
"""

from __future__ import annotations

import dataclasses
import logging
import math

from gentext.config import DEFAULT_WIDTH, ModelConfig, TrainConfig
from gentext.models import REGISTRY
from gentext.training import distill
from gentext.training.averaging import WEIGHT_AVERAGE

logger = logging.getLogger(__name__)

DEFAULT_STEPS = 2000  # TrainConfig.steps' documented default when no limit is given
REFERENCE_TOKENS_PER_S = 20_000  # the default 2x256 LSTM training on a 2-core CPU (RESULTS.md)
REFERENCE_WEIGHTS = 850_000  # its recurrent weights


def recurrent_weights(model: ModelConfig) -> int:
    """The weights a training step multiplies by per token, roughly, as the kind declares them
    (`weights_per_token`); for a kind that does not, 24 H^2 a layer (a Transformer block's
    attention and MLP) and the head."""
    declared = getattr(REGISTRY.get(model.kind), "weights_per_token", None)
    if declared is not None:
        return declared(model)
    return model.num_layers * 24 * model.hidden_size**2 + model.hidden_size * model.vocab_size


def planned_passes(train_tokens: int, model: ModelConfig, train: TrainConfig) -> float:
    """How many times the run will read the training tokens (estimated for a time limit)."""
    if train.epochs is not None:
        return train.epochs
    if model.hidden_size is None:  # not chosen yet: as the default width
        model = dataclasses.replace(model, hidden_size=DEFAULT_WIDTH)
    per_step = train.batch_size * train.seq_len
    if train.steps is not None or train.time_limit is None:
        return (train.steps or DEFAULT_STEPS) * per_step / max(train_tokens, 1)
    speed = REFERENCE_TOKENS_PER_S * min(1.0, REFERENCE_WEIGHTS / recurrent_weights(model)) ** 0.75
    return train.time_limit * speed / max(train_tokens, 1)


AUTO_MINGRU_PASSES = 4.0  # --model auto: a minGRU up to this many planned passes, an LSTM beyond
WIDE = 512  # ... and a character LSTM's on a time limit that lets it read its text at most WIDE_PASSES times
WIDE_PASSES = 10.0


def width_is_chosen(condition: str, level: str, model: ModelConfig, train: TrainConfig) -> bool:
    """Are --hidden-size and --lr (where not given) chosen when the text is read? For a plain
    character LSTM (or --model auto) on a time limit, untied: where they were measured. Elsewhere
    they are DEFAULT_WIDTH and LEARNING_RATE."""
    plain_chars = condition == "none" and level == "char" and not model.tie_weights
    return plain_chars and train.time_limit is not None and model.kind in ("auto", "lstm")


def auto_width(train_tokens: int, model: ModelConfig, train: TrainConfig) -> int:
    """--hidden-size not given (`width_is_chosen`): a 2x512 LSTM where the time limit lets it read
    the text at most WIDE_PASSES times, else 2x256. Measured at equal minutes (RESULTS.md, "Width"):
    Tiny Shakespeare in 10 minutes, 512 wide read it about six times and held out 0.04 nats/char
    better than 256 wide read fourteen times; 100 KB texts in 3 minutes (some sixteen passes wide,
    forty-five narrow) held out 0.00-0.03 worse wide. A minGRU (read a few times) keeps 256."""
    if model.kind != "lstm":
        return DEFAULT_WIDTH
    passes = planned_passes(train_tokens, dataclasses.replace(model, hidden_size=WIDE), train)
    width = WIDE if passes <= WIDE_PASSES else DEFAULT_WIDTH
    logger.info(
        "width %d: %d wide, the run would read its %s training tokens about %.3g times, %s %g (--hidden-size sets it)",
        width, WIDE, f"{train_tokens:,}", passes, "within" if width == WIDE else "more than", WIDE_PASSES,
    )  # fmt: skip
    return width


LEARNING_RATE = 3e-3  # --lr not given, outside the runs where it is chosen (`width_is_chosen`)
LSTM_LEARNING_RATE = 7e-3  # ... and for an LSTM of a width it was measured at (DEFAULT_WIDTH, WIDE) inside them
TAUGHT_LEARNING_RATE = 3e-2  # ... and for a DEFAULT_WIDTH LSTM taught by a chain (--distill 0.5 or more)


def auto_learning_rate(model: ModelConfig, distill: float = 0.0) -> float:
    """--lr not given where the width is chosen (`width_is_chosen`): LSTM_LEARNING_RATE for an
    LSTM DEFAULT_WIDTH or WIDE wide (its width chosen or given), TAUGHT_LEARNING_RATE for the
    DEFAULT_WIDTH one a chain teaches as much as it was measured taught (`distill`, the teacher's
    weight, at least DISTILL), else LEARNING_RATE.
    Measured (RESULTS.md): 512 wide at 10 minutes on Tiny Shakespeare, 0.02-0.04 nats/char better held out
    at the same steps at 5e-3 to 1e-2 than at 2e-3 or 3e-3 ("The learning rate of the wide LSTM");
    256 wide on three 100 KB texts read some forty times, 0.006-0.024 better at the same 3,000 steps
    ("A higher rate for the narrow LSTM"); taught at --distill 0.5 on the same texts, 0.013-0.023
    better at 2e-2 than at 7e-3 ("A taught run's rate"), and at 3e-2 up to 0.016 better than 2e-2
    (at equal steps and minutes, "The default command on the Zen 4"). Other widths and kinds were
    not measured at another rate."""
    measured = model.kind == "lstm" and model.hidden_size in (DEFAULT_WIDTH, WIDE)
    rate, reason = (LSTM_LEARNING_RATE if measured else LEARNING_RATE), ""
    if measured and distill >= DISTILL and model.hidden_size == DEFAULT_WIDTH:
        rate, reason = TAUGHT_LEARNING_RATE, ", taught by a chain"
    logger.info("learning rate %g: a %d-wide %s%s (--lr sets it)", rate, model.hidden_size, model.kind, reason)
    return rate


def auto_weight_average(measured: bool) -> float:
    """--ema not given: WEIGHT_AVERAGE where it was measured (`width_is_chosen`'s runs: a character
    LSTM on a time limit, the `shakespeare-cpu` recipe's included), else 0: off (training/averaging.py)."""
    decay = WEIGHT_AVERAGE if measured else 0.0
    if decay:
        logger.info("a moving average of the weights is kept, decay %g a step (--ema sets it)", decay)
    return decay


CACHE_WINDOW = 2000  # --neural-cache not given where it was measured: the window the fit chooses up to


def auto_cache_window(measured: bool) -> int:
    """--neural-cache not given: CACHE_WINDOW where it was measured (`width_is_chosen`'s runs, not
    under a preset, which sets its own), else 0: off. On Tiny Shakespeare's 10-minute run the cache
    took the figure as sampled from 1.41 to 1.30 nats/char, and heard only where it is sure its
    samples after a long prompt read about as the network's own (RESULTS.md, "A cache heard where
    it is sure"); it costs generation speed (one stream ~2.5x slower, 64 streams ~7x)."""
    window = CACHE_WINDOW if measured else 0
    if window:
        logger.info("a neural cache of up to %d outputs is fitted after training (--neural-cache 0: none)", window)
    return window


def auto_kind(train_tokens: int, level: str, model: ModelConfig, train: TrainConfig) -> str:
    """--model auto: the kind that reached the lower held-out loss at equal minutes on a text of
    this size (RESULTS.md, "minGRU"). A minGRU learns more per minute (each window is a few large
    products, not T small ones), so it wins while the run reads its text a few times; it also
    memorises sooner: on Tiny Shakespeare it won at about three passes and the LSTM held out better
    at six and at twelve. Word and subword runs keep the LSTM, their recipe's kind."""
    trial = dataclasses.replace(model, kind="mingru")
    passes = planned_passes(train_tokens, trial, train)
    fits = level == "char" and not model.adaptive_cutoffs  # a character vocabulary needs no adaptive softmax
    kind = "mingru" if fits and passes <= AUTO_MINGRU_PASSES else "lstm"
    logger.info(
        "--model auto: %s (%s-level, the run will read its %s training tokens about %.3g times)",
        kind, level, f"{train_tokens:,}", passes,
    )  # fmt: skip
    return kind


MAX_DROPOUT = 0.4  # the help of --dropout and the README say this number
FEW_PASSES = 2.0  # a text read at most this many times is not memorised: no dropout


def auto_dropout(train_tokens: int, model: ModelConfig, train: TrainConfig) -> float:
    passes = planned_passes(train_tokens, model, train)
    dropout = round(min(max(0.07 * math.log2(max(passes, 1e-9) / FEW_PASSES), 0.0), MAX_DROPOUT), 2)
    logger.info(
        "dropout %.2f: the run will read its %s training tokens about %.3g times (--dropout sets it)",
        dropout,
        f"{train_tokens:,}",
        passes,
    )
    return dropout


DISTILL = 0.5  # --distill not given, where it was measured (`auto_distill`): a run reading its text
DISTILL_PASSES = 20.0  # ... at least this many times
DISTILL_FEW = 0.1  # ... and a run reading it more than DISTILL_FEW_PASSES times, fewer than DISTILL_PASSES
DISTILL_FEW_PASSES = 3.0


def auto_distill(train_tokens: int, vocab: int, model: ModelConfig, train: TrainConfig) -> float:
    """--distill not given in a `width_is_chosen` run, where the teacher's table is small: DISTILL
    where the run reads its text at least DISTILL_PASSES times (a small text), DISTILL_FEW where it
    reads it more than DISTILL_FEW_PASSES times (a book), else 0. Measured (RESULTS.md): on three 100 KB texts
    read some forty times by the 256-wide LSTM, 0.013-0.096 nats/char lower held out at the same
    steps at 0.5 ("A chain as a teacher"); on Tiny Shakespeare read some five times in ten minutes by
    the 512-wide one, 0.1 lowered both the network's own held-out loss and the loss of the model as
    sampled (the chain and cache mixed in after training), where 0.25 and more raised the latter: a
    network taught much by the chain leaves the same chain less to add ("A light teacher for a book"); on
    2 MB of WikiText-2 read some twice, the network's own loss was higher taught ("The teacher's table
    from each context's successors")."""
    passes = planned_passes(train_tokens, model, train)
    weight = DISTILL if passes >= DISTILL_PASSES else DISTILL_FEW if passes > DISTILL_FEW_PASSES else 0.0
    weight = weight if distill.fits(train_tokens, vocab) else 0.0
    if weight:
        logger.info(
            "--distill %g: the run will read its %s training tokens about %.3g times, a chain teaches it (0: off)",
            weight, f"{train_tokens:,}", passes,
        )  # fmt: skip
    return weight


CHAR_WEIGHT_DECAY = 0.1  # AdamW's decoupled decay on a character model's matrices (RESULTS.md, "Weight decay")
WEIGHT_DECAY = 0.01  # ... on a word or subword model's, and with no tokenizer (captions)


def auto_weight_decay(rare_tokens: bool, train: TrainConfig) -> float:
    """--weight-decay not given: 0 with SGD (where decay is L2 on the gradient), else 0.1 where
    every token is common (plain character text) and 0.01 where some are rare (`rare_tokens`:
    words, subwords, a label's mark or a source's end read once a document). A common token's rows
    of the embedding and head are updated nearly every step, so decay only keeps the matrices small
    (measured: held-out loss 0.009-0.028 nats/char lower on Tiny Shakespeare and a 100 KB WikiText
    cut); a rare token's rows get a gradient now and then but decoupled decay every step: at 0.1 a
    word's would shrink to a twentieth over a ten-thousand-step run, and a tiny labelled run's
    label steered its text visibly less."""
    if train.optimizer == "sgd":
        return 0.0
    return WEIGHT_DECAY if rare_tokens else CHAR_WEIGHT_DECAY
