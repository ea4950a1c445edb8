"""The matrices a kind's generation step reads, in each weight format, kept beside its weights.

A step's products are made from the weights in a format (models/weights.py: int8 packs them, bf16
casts them), so they are built once and rebuilt only when a weight they copy has changed (training
continues after a mid-run sample; a fine-tune loads new weights). Checking means reading every such
weight's version and address: with a neural cache that was twice a token, a tenth or more of a
compiled step's time. So a run of one-token steps checks once (`run=True`), and whatever may change
the weights between two runs starts a new one: a sequence pass (training, evaluation), loading a
state dict, a move or a cast, a new format (`_forget_check`). The Transformer, whose token costs
milliseconds, checks every call.
"""

from __future__ import annotations

import torch


class StepOps:
    """Mixed into a stepped kind (an nn.Module) before nn.Module: the kind gives `step_weights()`
    (the tensors its matrices are made from) and `build_step_ops(fmt)`, keeps `weight_format`, calls
    `init_step_ops()` in its __init__ and `_forget_check()` on every path that may change a weight."""

    weight_format: str

    def init_step_ops(self) -> None:
        self._ops: dict[str, tuple[tuple, dict]] = {}  # format -> (the weights' versions, matrices)
        self._checked: str | None = None  # the format whose matrices this run of steps found current
        self.register_load_state_dict_post_hook(lambda module, keys: module._forget_check())

    def step_weights(self) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def build_step_ops(self, fmt: str) -> dict:
        raise NotImplementedError

    def _forget_check(self) -> None:
        self._checked = None

    def _apply(self, fn, *args, **kwargs):
        self._forget_check()  # a move or a cast: new tensors
        return super()._apply(fn, *args, **kwargs)

    @torch.no_grad()
    def _step_ops(self, fmt: str | None = None, run: bool = False) -> dict:
        """The step's matrices in a format (default: the current one), rebuilt when a weight they
        are made from changed; with `run` (a one-token step), checked once per run of steps."""
        fmt = fmt or self.weight_format
        if run and self._checked == fmt:
            return self._ops[fmt][1]
        params = self.step_weights()
        version = (*(p._version for p in params), *(p.data_ptr() for p in params))
        if fmt not in self._ops or self._ops[fmt][0] != version:
            self._ops[fmt] = (version, self.build_step_ops(fmt))
        self._checked = fmt
        return self._ops[fmt][1]
