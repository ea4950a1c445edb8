"""The recurrent models' single-token step: what generation runs once per token.

Calling nn.LSTM for one token re-dispatches the whole fused sequence kernel each time; a cell
step written as one matrix product per layer ([x, h] @ [W_ih, W_hh]^T) is several times faster,
and for layer 0 the input product is a lookup: embedding @ W_ih0^T + biases is precomputed as a
(V, gates*H) table. The products run in the weight format the model was given (models/weights.py);
the cell arithmetic and the state stay float32.

On the Python path the int8 products are a minority of a step: it is bound by how many tensor
operations it makes and how much Python runs between them, not by their arithmetic (the profile is
in benchmarks/RESULTS.md; gentext/native makes the same calls from C++ where it is built). So the
step walks a tuple per layer, fills the layer-0 row in place, slices with one `chunk` (four
`narrow`s cost twice as much) and wraps the state once. The activations run on the same views in
the same order as before, so the numbers are the same bit for bit whatever the width
(tests/models/test_rnn.py). One sigmoid over all four gates would be cheaper, but at a width that is
not a multiple of the vector length a few elements would round differently: a tail runs scalar
code.
"""

from __future__ import annotations

import torch

from gentext import native, threads
from gentext.models.adaptive import AdaptiveSoftmax


@torch.no_grad()
def build_ops(model, matmul) -> dict:
    """The step's matrices for `model` (an RNNLanguageModel) made by `matmul` (a format's constructor)."""
    cfg, rnn = model.config, model.rnn
    gru = cfg.kind == "gru"
    bias0 = rnn.bias_ih_l0 + (0 if gru else rnn.bias_hh_l0)
    ops = {"table": torch.addmm(bias0, model.embedding.weight, rnn.weight_ih_l0.t()), "layers": []}  # (V, G*H)
    for layer in range(cfg.num_layers):
        w_ih, w_hh = getattr(rnn, f"weight_ih_l{layer}"), getattr(rnn, f"weight_hh_l{layer}")
        b_ih, b_hh = getattr(rnn, f"bias_ih_l{layer}"), getattr(rnn, f"bias_hh_l{layer}")
        if gru:  # r gates the hidden product alone: the two products stay apart
            ops["layers"].append((None if layer == 0 else matmul(w_ih, b_ih), matmul(w_hh, b_hh)))
        elif layer == 0:
            ops["layers"].append((None, matmul(w_hh, None)))
        else:
            ops["layers"].append((matmul(torch.cat([w_ih, w_hh], dim=1), b_ih + b_hh), None))
    adaptive = isinstance(model.head, AdaptiveSoftmax)
    ops["head"] = model._output if adaptive else matmul(model.head.weight, model.head.bias)
    return ops


def compiled(kind: str, ops: dict):
    """The compiled step for these matrices (gentext/native), made once per set of ops and only
    when the kernels are loaded; None: the Python step below runs. Same numbers either way."""
    kernels = native.kernels()
    if kernels is None:
        return None
    if "native" not in ops:
        layers = [tuple(None if op is None else op.native() for op in pair) for pair in ops["layers"]]
        made = [op is not None for pair in ops["layers"] for op in pair]
        usable = made == [spec is not None for pair in layers for spec in pair]  # every product has a kernel
        head = ops["head"].native() if hasattr(ops["head"], "native") else None  # an adaptive head: Python
        ops["native"] = kernels.RnnStep(kind, ops["table"], layers, head) if usable else None
        ops["native_head"] = head is not None
    return ops["native"]


def _whole(kind: str, ops: dict, device: torch.device):
    """The compiled step where it also makes the head (a whole token, logits included), on the CPU."""
    step = compiled(kind, ops) if device.type == "cpu" else None
    return step if step is not None and ops["native_head"] else None


def read(kind: str, ops: dict, ids: torch.Tensor, targets: torch.Tensor | None, state):
    """A sequence ids (B, T) read token by token in one compiled call, as the model's `_stepped`
    reads it: (logits (B, T, V) or log P(targets) (B, T), h[, c]), or None where the compiled step
    or its head is not here."""
    step = _whole(kind, ops, ids.device)
    if step is None:
        return None
    h, c, split = state.tensors["h"], state.tensors.get("c"), threads.spare_core(ids.shape[0])
    return native.kernels().read(step, ids, targets, h, c, split)


def step(kind: str, ops: dict, ids: torch.Tensor, h_all: torch.Tensor, c_all: torch.Tensor | None):
    """ids (B,), h (and c) (layers, B, H) -> the last layer's output (B, H), new h (and c)."""
    table, x, new_h, new_c = ops["table"], None, [], []
    for layer, (x_op, h_op) in enumerate(ops["layers"]):
        h = h_all[layer]
        if kind == "gru":
            x = _gru(table.index_select(0, ids) if x is None else x_op(x), h_op(h), h)
        else:
            if x is None:  # layer 0: the input's product is a row of the table
                gates = table.index_select(0, ids).add_(h_op(h))
            else:
                gates = x_op(torch.cat([x, h], dim=1))
            if c_all is None:
                x = torch.tanh(gates)
            else:
                x, c = _lstm(gates, c_all[layer])
                new_c.append(c)
        new_h.append(x)
    return x, torch.stack(new_h), torch.stack(new_c) if new_c else None


def _lstm(gates: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """gates (B, 4H) in nn.LSTM's order i, f, g, o, and c (B, H) -> new h, new c."""
    i, f, g, o = gates.chunk(4, dim=1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def _gru(xw: torch.Tensor, hw: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """The input's and the state's products (B, 3H) in nn.GRU's order r, z, n, and h (B, H) -> new h."""
    (xr, xz, xn), (hr, hz, hn) = xw.chunk(3, dim=1), hw.chunk(3, dim=1)
    r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
    return torch.lerp(torch.tanh(xn + r * hn), h, z)  # (1 - z) * n + z * h
