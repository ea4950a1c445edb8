"""Fine-tuning: a new run that starts from another run's weights, on new text (`--init-from RUN`).

The architecture and tokenizer settings come from the source run. A character or word vocabulary
grows: the new text's new tokens are appended, so every old id keeps its meaning; their embedding
rows start at the mean of the old rows (an "average token", not noise) and their output biases at
the lowest old bias (unlikely until the new text teaches otherwise). Byte-level BPE encodes any
text and keeps its merges. The optimizer starts fresh. At the end the run is also scored on the
source run's held-out text, so the user sees what fine-tuning cost there (forgetting).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from gentext import checkpoint
from gentext.config import ModelConfig
from gentext.data.tokencache import held_out
from gentext.errors import GentextError
from gentext.fields import flag_of
from gentext.models import fitted_by_counting
from gentext.models.scoring import evaluate
from gentext.training.feeds import FINAL_EVAL_TOKENS

CHANGEABLE = ("dropout",)  # architecture options a fine-tuning run may still set
VOCAB_ROWS = ("embedding.weight", "head.weight")  # (V, H) matrices: new rows = mean of the old ones


def source_configs(run_dir: str, model_overrides: dict[str, Any]):
    """The source run (on the CPU) and the tokenizer and model settings the new run inherits."""
    source = checkpoint.load_run(run_dir, mix=False)  # the network alone is what trains on
    if fitted_by_counting(source.model):
        raise GentextError(f"--init-from {run_dir}: a {source.model_config.kind} model is refitted, not fine-tuned")
    refused = sorted(set(model_overrides) - set(CHANGEABLE))
    if refused:
        flags = ", ".join(flag_of(ModelConfig, name) for name in refused)
        raise GentextError(f"--init-from takes the architecture of {run_dir}; drop {flags} (only --dropout may change)")
    tok_cfg = dataclasses.replace(source.config.tokenizer)
    model_cfg = dataclasses.replace(source.model_config, **model_overrides)
    return source, tok_cfg, model_cfg


def init_weights(net: nn.Module, source: checkpoint.LoadedRun) -> int:
    """Copy the source's weights into `net` (same architecture, a vocabulary as large or larger);
    returns how many tokens were added."""
    state = {name: tensor.clone() for name, tensor in source.model.state_dict().items()}
    old, new = source.model_config.vocab_size, net.config.vocab_size
    if new > old:
        for name in VOCAB_ROWS:
            if name in state:
                rows = state[name]
                state[name] = torch.cat([rows, rows.mean(dim=0, keepdim=True).expand(new - old, -1)])
        if "head.bias" in state:
            bias = state["head.bias"]
            state["head.bias"] = torch.cat([bias, bias.min().expand(new - old)])
    net.load_state_dict(state, strict=True)
    return new - old


def forgetting(net: nn.Module, source: checkpoint.LoadedRun, seq_len: int, device) -> dict[str, Any]:
    """The fine-tuned model's loss on the source run's held-out ids (from the token cache), beside
    the source's own figure."""
    data = held_out(source.config)
    before = source.config.result.val_loss if source.config.result is not None else None
    if data is None:
        return {"original_val_loss_before": before, "original_val_loss_after": None}
    nats, count = evaluate(net, data.val, seq_len, device, max_tokens=FINAL_EVAL_TOKENS)
    return {"original_val_loss_before": before, "original_val_loss_after": nats / count}
