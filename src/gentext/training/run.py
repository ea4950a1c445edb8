"""One training run's moving parts (`_Run`): its data, optimizer, scaler, carried state and
progress, with a method for each named step the loop in `trainer.py` takes: resume, evaluate,
step (forward, backward, clip, update), skip a non-finite step, save, the final evaluation.

Checkpoints: `model.safetensors` holds the best validation weights (rank 0 writes it),
`train_state.safetensors` everything needed to resume bitwise (every rank takes part: the state
rows and RNG states are gathered to rank 0).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from gentext import checkpoint, claim
from gentext.config import TrainConfig
from gentext.errors import GentextError
from gentext.hardware import autocast, resolve_precision
from gentext.models import State
from gentext.training import distill, distributed
from gentext.training.averaging import averaged
from gentext.training.defaults import WEIGHT_DECAY
from gentext.training.feeds import Batch, Objective
from gentext.training.records import Recorder, truncate_metrics
from gentext.training.train_state import Progress, load_train_state, read_train_state, save_train_state

logger = logging.getLogger(__name__)

MAX_BAD_STEPS = 5  # consecutive non-finite losses before the run gives up
RECOVERY_STEPS = 100  # good steps over which a halved learning rate grows back to full


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    # Decay matrices only: decaying biases and gains pulls them to zero for no benefit.
    params = list({id(p): p for p in model.parameters() if p.requires_grad}.values())
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _optimizer(model: nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        # Plain SGD at a high rate with tight clipping (Zaremba et al. 2014; pytorch/examples'
        # word_language_model: lr 20, clip 0.25) fits word-level LSTMs faster than Adam, whose
        # per-coordinate steps are noisy on the rarely seen rows of a big embedding.
        groups = _param_groups(model, config.weight_decay or 0.0)
        return torch.optim.SGD(groups, lr=config.learning_rate)
    groups = _param_groups(model, WEIGHT_DECAY if config.weight_decay is None else config.weight_decay)
    # Fused: one kernel for the whole update instead of a dozen passes over every weight
    fused = device.type in ("cpu", "cuda")
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(0.9, 0.99), fused=fused)


@dataclass
class _Budget:
    total_steps: int | None
    time_limit: float | None

    def progress(self, step: int, elapsed: float) -> float:
        """Fraction of the budget used: steps or time, whichever is further along."""
        parts = [step / self.total_steps if self.total_steps else 0.0]
        if self.time_limit:
            parts.append(elapsed / self.time_limit)
        return max(parts)


class Run:
    """One training run's moving parts; `train` drives it through its named steps."""

    def __init__(self, model, make_feed, config: TrainConfig, run_dir: Path, device):
        """`make_feed(rows)`: the feed (training/feeds.py) of this process's rows of each batch."""
        self.config, self.run_dir = config, Path(run_dir)
        self.dist = distributed.from_env()
        self.device = distributed.setup(self.dist, device)
        self.main = self.dist.is_main
        self.feed = make_feed(distributed.row_range(config.batch_size, self.dist))
        self.dtype = resolve_precision(config.precision, self.device)
        self.model = model.to(self.device).train()
        self.optimizer = _optimizer(model, config, self.device)
        self.average = averaged(self.model, config.weight_average or 0.0)  # what validation reads and the run keeps
        # fp16 gradients underflow without loss scaling; bf16 has float32's range and needs none
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        objective = Objective(model)  # the condition's encoder runs inside the (DDP) forward
        self.net = nn.parallel.DistributedDataParallel(objective) if self.dist.enabled else objective
        if self.dist.enabled:
            torch.manual_seed(config.seed + 7919 * self.dist.rank)  # each rank its own dropout masks
        self.cold_rng = torch.Generator().manual_seed(config.seed)
        self.carries = self.feed.carries and getattr(model, "carries_state", True)
        self.budget = _Budget(self._total_steps(), config.time_limit)
        self.data_hash = self.feed.data_hash
        self.prog = Progress(data_hash=self.data_hash)
        self.tokens_at_start = 0
        self.state: State | None = None
        self.recent: deque[float] = deque(maxlen=20)  # train loss is reported as the mean of the last 20
        self.last_val: float | None = None
        self.last_eval_step = -1
        self.recorder = Recorder(run_dir, tensorboard=config.tensorboard) if self.main else None

    def _total_steps(self) -> int | None:
        total = self.config.steps
        if self.config.epochs is not None:
            epoch_steps = math.ceil(self.config.epochs * self.feed.steps_per_epoch)
            total = epoch_steps if total is None else min(total, epoch_steps)
        return total

    # -- checkpoints -------------------------------------------------------------------------------
    def _rng(self) -> dict[str, torch.Tensor]:
        mine = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            mine["cuda"] = torch.cuda.get_rng_state(self.device)
        out = {"reset": self.cold_rng.get_state()}
        for name, tensor in mine.items():
            for rank, value in enumerate(distributed.all_gather_cpu(tensor, self.dist)):
                out[name if rank == 0 else f"{name}.{rank}"] = value
        return out

    def save(self, elapsed: float) -> None:
        """The resumable checkpoint (every rank takes part: the state rows are gathered)."""
        full = distributed.gather_state(self.state, self.dist) if self.state is not None else None
        rng = self._rng()
        self.prog.elapsed = elapsed
        if self.main:
            scaler = self.scaler.state_dict()
            with claim.saving(self.run_dir):
                save_train_state(self.run_dir, self.model, self.optimizer, self.prog, full, rng, scaler, self.average)

    def resume(self) -> None:
        what = f"{self.run_dir}/train_state.safetensors"
        data = distributed.from_main(lambda: read_train_state(self.run_dir), self.dist)
        restored = load_train_state(data, self.model, self.optimizer, self.device, what, self.average)
        if restored.progress.data_hash != self.data_hash:
            raise GentextError(
                f"{self.run_dir}: the training text differs from the one this run started with; cannot resume"
            )
        self.prog = restored.progress
        if self.budget.progress(self.prog.step, self.prog.elapsed) >= 1.0:
            raise GentextError(
                f"{self.run_dir} is already at step {self.prog.step} ({self.prog.elapsed:.0f}s of training): "
                "resuming with this budget would train nothing; give a larger --steps, --epochs or --time-limit"
            )
        self.tokens_at_start = self.prog.tokens
        suffix = "" if self.dist.rank == 0 else f".{self.dist.rank}"
        torch.set_rng_state(restored.rng.get(f"torch{suffix}", restored.rng["torch"]))
        if self.device.type == "cuda" and f"cuda{suffix}" in restored.rng:
            torch.cuda.set_rng_state(restored.rng[f"cuda{suffix}"], self.device)
        if "reset" in restored.rng:
            self.cold_rng.set_state(restored.rng["reset"])
        if restored.scaler:
            self.scaler.load_state_dict(restored.scaler)
        if restored.state is not None:
            rows = self.feed.rows
            self.state = restored.state.narrow(rows.start, len(rows))
        if self.main:
            truncate_metrics(self.run_dir, self.prog.step)

    # -- evaluation --------------------------------------------------------------------------------
    def evaluate(self) -> None:
        """Periodic validation on a fixed sample of `eval_tokens` held-out tokens spread over the
        whole split (comparable with each other, cheap, an estimate of the final figure); keeps
        the best weights."""
        prog = self.prog
        self.last_eval_step = prog.step
        kept = self.model if self.average is None else self.average.module
        scored = self.feed.validate(kept, self.device)
        if scored is not None:
            self.last_val = scored[0] / max(scored[1], 1)
            if self.main:
                self.recorder.evaluation({"step": prog.step, "tokens": prog.tokens, "val_loss": self.last_val})
        if scored is None or prog.best_val is None or self.last_val < prog.best_val:
            prog.best_val, prog.best_step, prog.evals_since_best = self.last_val, prog.step, 0
            if self.main:
                with claim.saving(self.run_dir):
                    checkpoint.save_weights(self.run_dir, kept)
        else:
            prog.evals_since_best += 1

    def final_evaluation(self) -> tuple[float | None, int]:
        """The best weights on the whole held-out text (up to FINAL_EVAL_TOKENS), on rank 0 alone:
        the other ranks have nothing to report and may not see the run directory."""
        if not self.main:
            return None, 0
        if self.prog.best_step != self.prog.step or self.average is not None:
            checkpoint.load_weights(self.run_dir, self.model)  # report the weights that were kept
        scored = self.feed.final(self.model, self.device)
        if scored is None or not scored[1]:
            return None, 0
        nats, count = scored
        self.recorder.log({"step": self.prog.best_step, "full_val_loss": nats / count, "val_tokens": count})
        return nats / count, count

    # -- one step ----------------------------------------------------------------------------------
    def _window_state(self, k: int) -> State | None:
        """The state the rows of window k start from: carried (detached) from the last window,
        with a few rows put back to their start so the model learns to begin cold, as generation
        does. The draw is made for the global batch and sliced: ranks match one process."""
        if k == 0 or not self.carries or self.state is None:
            return None  # the data wrapped (or the model never carries): rows restart
        state = self.state.detach()  # truncated BPTT: no gradient into the past
        if self.config.state_reset > 0:
            rows = self.feed.rows
            keep = (torch.rand(self.config.batch_size, generator=self.cold_rng) >= self.config.state_reset)[
                rows.start : rows.stop
            ]
            state = state.where(keep, self.model.initial_state(len(rows), self.device))
        return state

    def step(self, lr: float) -> float | None:
        """One optimisation step on the next window; the global loss, or None if it was skipped."""
        prog, config = self.prog, self.config
        batch = self.feed.batch(prog.step)
        x, y, condition = (_to_device(t, self.device) for t in (batch.inputs, batch.targets, batch.condition))
        state = self._window_state(batch.window) if batch.condition is None else None
        with autocast(self.device, self.dtype):
            loss, nll, new_state = self._forward(batch, x, y, condition, state)
        loss_value = distributed.mean(nll, self.dist)  # the global batch's loss on every rank
        prog.step += 1
        if not (math.isfinite(loss_value) and math.isfinite(loss.item())):
            self._skip()
            return None
        prog.bad_steps = 0
        prog.lr_scale = min(1.0, prog.lr_scale * 2 ** (1 / RECOVERY_STEPS))
        self.state = new_state if self.carries else None  # a state never carried is never saved
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if config.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.average is not None:
            self.average.update_parameters(self.model)
        prog.tokens += batch.tokens
        self.recent.append(loss_value)
        return loss_value

    def _forward(self, batch: Batch, x, y, condition, state):
        """(the loss to minimise, the targets' own loss, the state after): with a teacher's
        distributions (`batch.taught`), the loss mixes them in (training/distill.py)."""
        if batch.taught is None:
            target_logp, new_state = self.net(x, state, targets=y, condition=condition)  # (B, T)
            nll = _loss(target_logp.float(), batch, self.device)
            return nll, nll, new_state
        logits, new_state = self.net(x, state, condition=condition)
        loss, nll = distill.loss(logits, y, batch.taught.to(self.device), self.config.distill)
        return loss, nll, new_state

    def _skip(self) -> None:
        """A non-finite loss: no update, a halved learning rate, and rows that start cold (the
        data moved on past a window the state never took in)."""
        prog = self.prog
        prog.bad_steps += 1
        prog.lr_scale *= 0.5
        self.state = None
        if prog.bad_steps >= MAX_BAD_STEPS:
            raise GentextError(
                f"the loss was not finite for {prog.bad_steps} steps in a row; stopped. The last good "
                f"checkpoint (step {prog.best_step}) is in {self.run_dir}; try a lower --lr"
            )
        logger.warning("non-finite loss at step %d; step skipped, learning rate halved", prog.step)

    def log(self, loss: float, lr: float, rate: float) -> None:
        if self.main and (self.prog.step % 10 == 0 or self.prog.step == 1):
            record = {"step": self.prog.step, "tokens": self.prog.tokens, "train_loss": loss, "lr": lr}
            self.recorder.log({**record, "tokens_per_second": rate})

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.close()


def _to_device(value, device):
    """A batch's tensors (a condition may be a tuple of them) on the training device."""
    if isinstance(value, tuple):
        return tuple(_to_device(v, device) for v in value)
    return value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value


def _loss(logp: torch.Tensor, batch: Batch, device) -> torch.Tensor:
    """The mean negative log-likelihood of the window, or of a pair batch's real targets (padding
    never counts), scaled by the global batch's token count (training/feeds.py)."""
    if batch.mask is None:
        return -logp.mean()
    return -logp[batch.mask.to(device)].sum() * batch.scale
