"""Weight formats for the generation step: how the step's matrices are stored and multiplied.

One generation step reads every weight once, so a single stream is bound by memory bandwidth and
the bytes per weight set its speed: float32 reads 4, bfloat16 2, int8 1 (plus a float32 scale per
output channel). Each format is a `Matmul`: `op(x)` takes float32 activations (B, K) and returns
float32 (B, N) = x @ W^T + b, so the cell arithmetic and the carried state stay float32 whatever
the format (the same rule as training's autocast).

- fp32: `torch.addmm`, the reference.
- bf16: weights stored in bfloat16, activations cast per call; oneDNN runs it natively on CPUs with
  AVX-512 BF16 / AMX and on GPUs, and emulates it (slowly) elsewhere, so `auto` only picks it there.
- fp16: weights stored in float16 and widened to float32 inside the kernel, activations and sums
  float32 (fbgemm's fp16 GEMM, any x86 CPU with AVX2; half-precision addmm on a GPU). Half the
  bytes of float32 at almost none of its precision, nothing quantized per call (a row's result
  depends on its batch only by float32's own last-bit blocking); on a Transformer's small products
  it is as fast as int8 here (RESULTS.md).
- int8: per-output-channel symmetric int8 weights with dynamically quantized activations, through
  PyTorch's quantized engine (`quantized::linear_dynamic`, fbgemm/x86: AVX2 and AVX-512 VNNI; the
  weight-only `_weight_int8pack_mm` measured slower than float32 itself: RESULTS.md). Its
  error is measured, not assumed: `benchmarks/bench_generation.py` reports the held-out loss per
  format, and `choose` checks a candidate against float32 before `auto` takes it.
"""

from __future__ import annotations

import contextlib
import math
import warnings

import torch

from gentext import native, threads
from gentext.errors import GentextError
from gentext.hardware import cpu_native, direct_int8
from gentext.useconfig import WEIGHT_FORMATS


def _packed_op(overload):
    """`overload` (an operator taking packed weights, a TorchBind ScriptObject) as a function that
    skips two costs of the Python call path, with the same kernel and the same numbers:
    - `__torch_function__` checks: for every argument torch asks whether it overrides torch
      functions, and for a ScriptObject that lookup raises and catches a C++ exception (py-spy
      --native on a small product: most of the call was this dispatch, not the kernel).
      Our arguments are plain tensors and packed weights, which override nothing, so the check is
      switched off around the call (`DisableTorchFunctionSubclass`).
    - `TorchBindOpOverload.__call__`'s check for the fake script objects of torch.compile tracing
      (a pytree walk of the arguments); nothing here is traced. The underlying builtin (`_op`,
      where this torch has it) is called instead.
    The figures (a small product's call several times faster, a large one's by a third) are in
    RESULTS.md, "The quantized products' dispatch". Calling the overload object itself rather than
    `torch.ops.quantized.<name>` also skips the per-call overload resolution."""
    builtin = getattr(overload, "_op", overload)
    no_torch_function = getattr(torch._C, "DisableTorchFunctionSubclass", contextlib.nullcontext)

    def call(*args):
        with no_torch_function():
            return builtin(*args)

    return call


_LINEAR_INT8 = _packed_op(torch.ops.quantized.linear_dynamic.default)
_LINEAR_FP16 = _packed_op(torch.ops.quantized.linear_dynamic_fp16.default)


class Matmul:
    """x (B, K) float32 -> x @ W^T + b (B, N) float32, W stored as the format says."""

    bytes_per_weight = 4.0

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        self.shape = tuple(weight.shape)
        self.weight_t = weight.detach().t()
        self.bias = bias.detach() if bias is not None else torch.zeros(weight.shape[0], device=weight.device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x, self.weight_t)

    def native(self) -> tuple:
        """What the compiled step (gentext/native/kernels.cpp) needs to make this product itself."""
        return (1, self.weight_t, self.bias)

    def bytes(self) -> float:
        return self.shape[0] * self.shape[1] * self.bytes_per_weight


class Bf16Matmul(Matmul):
    bytes_per_weight = 2.0
    dtype = torch.bfloat16

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__(weight, bias)
        # contiguous (N, K) then transposed: the layout oneDNN's bf16 kernels read fastest
        self.weight_t = weight.detach().to(self.dtype).contiguous().t()
        self.bias = self.bias.to(self.dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x.to(self.dtype), self.weight_t).float()

    def native(self) -> tuple:
        return (2, self.weight_t, self.bias)


class Fp16Matmul(Bf16Matmul):
    """On a CPU fbgemm's fp16 GEMM (float16 weights, float32 activations and sums); on a GPU the
    16-bit addmm of Bf16Matmul in float16."""

    dtype = torch.float16

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        self.packed = None
        if weight.device.type != "cpu":
            super().__init__(weight, bias)
            return
        Matmul.__init__(self, weight, bias)
        with warnings.catch_warnings():  # fbgemm warns about weights it saturates to float16's range
            warnings.simplefilter("ignore", UserWarning)
            self.packed = torch.ops.quantized.linear_prepack_fp16(weight.detach().float(), self.bias.float())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is None:
            return super().__call__(x)
        return _LINEAR_FP16(x, self.packed)

    def native(self) -> tuple:
        return super().native() if self.packed is None else (3, None, None, self.packed)


class Int8Matmul(Matmul):
    bytes_per_weight = 1.0

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, bounded: bool = True):
        super().__init__(weight, bias)
        self.bounded = bounded
        w = weight.detach().float().cpu()
        scales = (w.abs().amax(dim=1) / 127.0).clamp_min(1e-12)  # one per output channel, symmetric
        zero = torch.zeros(w.shape[0], dtype=torch.long)
        with warnings.catch_warnings():  # quantized tensor constructors are marked for a future removal
            warnings.simplefilter("ignore", UserWarning)
            qweight = torch.quantize_per_channel(w, scales.double(), zero, 0, torch.qint8)
        # unbounded inputs are scaled per row before the product, the bias added after it
        self.packed = torch.ops.quantized.linear_prepack(qweight, self.bias.float().cpu() if bounded else None)
        # The activations' scale is chosen per call from the min and max of the whole batch, so a
        # row's result would depend on the other rows (a batched request's text would differ from
        # the same request alone). A recurrent state is in [-1, 1] (tanh-bounded h): one extra row
        # holding +1 and -1 pins the range, making each row's result its own. A Transformer's
        # inputs (layer-normed, GELU outputs) have no such bound: each row is divided by its own
        # largest magnitude first and the product multiplied back (per-row dynamic quantization
        # in one call; `bounded=False`).
        self.anchor = torch.zeros(1, weight.shape[1])
        self.anchor[0, 0], self.anchor[0, -1] = 1.0, -1.0
        self._product = (None, None)  # (the kernels module, its Product of these weights)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        compiled = self._compiled(x)
        if compiled is not None:
            return compiled(x)
        if self.bounded:  # reduce_range=True keeps fbgemm's AVX2 int16 accumulation from saturating
            return _LINEAR_INT8(torch.cat([x, self.anchor]), self.packed, True)[:-1]
        scale = torch.linalg.vector_norm(x, math.inf, dim=1, keepdim=True).clamp_min_(1e-30)  # max |x| per row
        y = _LINEAR_INT8(torch.cat([x / scale, self.anchor]), self.packed, True)[:-1]
        return torch.addcmul(self.bias, y, scale)

    def _compiled(self, x: torch.Tensor):
        """The loaded kernels' product of these weights (native/products.h), for a step that runs in
        Python (a Transformer's): these numbers in one call, a lone scaled row's by the kernels' own
        product where `_direct` laid the weights out for it. None without the kernels."""
        kernels = native.kernels()
        if kernels is None or x.dim() != 2 or x.dtype != torch.float32 or not x.is_contiguous() or x.is_cuda:
            return None
        if self._product[0] is not kernels:
            self._product = (kernels, kernels.Product(self.native()))
        return self._product[1]

    def native(self) -> tuple | None:
        """Also the weights in two halves of the outputs where this process may split a step
        (`threads.may_split`): a one-row step hands them to two cores (native/helper.h); each
        output's sum is its own, so the halves give the whole's numbers."""
        if not self.bounded:  # each row scaled by itself, the bias added after the product
            return (5, None, self.bias, self.packed, self.anchor, None, self._direct())
        return (4, None, None, self.packed, self.anchor, self._halves(), self._direct())

    def _direct(self) -> tuple | None:
        """The weights laid out for the kernels' own product of a lone row (native/direct.h: AVX-512
        VNNI or AVX2, fbgemm's numbers bit for bit, less work per call), where this CPU may run it:
        blocks of 64 outputs x 4 inputs, each output's weight sum, the activations' scale times each
        output's, the bias, the activations' 1 / scale and zero point for the range the anchor row
        pins, as fbgemm chooses them, and whether the AVX-512 kernels run (else AVX2's)."""
        outputs, width, isa = *self.shape, direct_int8(scaled=not self.bounded)
        if outputs % 64 or width % 4 or isa is None:
            return None
        qweight = torch.ops.quantized.linear_unpack(self.packed)[0]
        scale, zero = torch._choose_qparams_per_tensor(self.anchor, True)
        scale = torch.tensor(scale, dtype=torch.float32)
        ints = qweight.int_repr()
        blocks = ints.view(outputs // 64, 64, width // 4, 4).transpose(1, 2).contiguous()
        mult = scale * qweight.q_per_channel_scales().float()
        # unbounded: fbgemm's product has no bias (it is added after the rows are scaled back)
        bias = self.bias.float().contiguous() if self.bounded else torch.zeros(outputs)
        return (blocks, ints.sum(1, dtype=torch.int32), mult, bias, (1 / scale).item(), float(zero), isa == "avx512")

    def _halves(self) -> tuple | None:
        rows = self.shape[0]
        if rows < SPLIT_OUTPUTS or not threads.may_split():
            return None  # a narrow product gains nothing from a second core; a server never has one
        cut = rows // 2 // 64 * 64  # a multiple of fbgemm's column blocks
        weight, bias = torch.ops.quantized.linear_unpack(self.packed)[0], self.bias.float().cpu()
        pack = torch.ops.quantized.linear_prepack
        return pack(weight[:cut], bias[:cut].contiguous()), pack(weight[cut:], bias[cut:].contiguous())

    def bytes(self) -> float:
        return self.shape[0] * (self.shape[1] + 4)  # int8 weights and a float32 scale per row


FORMAT_CLASSES = {"fp32": Matmul, "bf16": Bf16Matmul, "fp16": Fp16Matmul, "int8": Int8Matmul}
# a product with fewer outputs than this gains less from a second core than waking it costs
SPLIT_OUTPUTS = 1024
SMALL_MATRIX = 1 << 16  # weights below this many stay float32: their bytes do not matter, a call's overhead does


def _matmul(fmt: str):
    """The constructor a format uses: weight (N, K), bias (N,) or None -> Matmul."""

    def make(weight: torch.Tensor, bias: torch.Tensor | None, bounded: bool = True) -> Matmul:
        """`bounded`: every input is within [-1, 1] (a recurrent state); int8 needs to know."""
        # A quantized call has a fixed overhead larger than a small product: a 65-character head
        # (33k weights) is much faster in float32, and reads almost nothing either way.
        if fmt == "fp32" or weight.numel() < SMALL_MATRIX:
            return Matmul(weight, bias)
        return Int8Matmul(weight, bias, bounded) if fmt == "int8" else FORMAT_CLASSES[fmt](weight, bias)

    return make


MATMULS = {name: _matmul(name) for name in FORMAT_CLASSES}


def check_format(name: str, device: torch.device) -> str:
    """A format this device can run; anything else is a one-line error."""
    if name not in WEIGHT_FORMATS:
        raise GentextError(f"--weights must be one of {', '.join(WEIGHT_FORMATS)}, got {name!r}")
    if name == "fp16" and device.type == "cpu" and not fp16_weights_native():
        raise GentextError("--weights fp16 needs an x86 CPU with AVX2 (fbgemm's fp16 kernels); use int8 or fp32")
    if name == "int8" and device.type != "cpu":
        raise GentextError("--weights int8 runs on the CPU only (PyTorch's quantized kernels); use bf16 on a GPU")
    if name == "bf16" and device.type == "cpu" and not cpu_native(torch.bfloat16):
        raise GentextError(
            "--weights bf16: this CPU has no native bf16 (AVX-512 BF16 or AMX); emulated it is far slower. "
            "Use --weights int8, fp32 or auto"
        )
    return name


def fast_formats(device: torch.device) -> list[str]:
    """The formats worth trying on this device, fastest first, by measurement (RESULTS.md, "Weight
    formats"): fbgemm's int8 step is several times float32's, oneDNN's bf16 helps many streams
    and not one."""
    if device.type != "cpu":
        return ["bf16", "fp32"]
    # fp16 after int8: as fast on a Transformer, slower for 64 RNN streams; where int8 costs too
    # much quality, fp16 still halves float32's bytes at almost no cost
    half = ["fp16"] if fp16_weights_native() else []
    if cpu_native(torch.bfloat16):
        return ["int8", "bf16", *half, "fp32"]
    return ["int8", *half, "fp32"]  # emulated bf16 is orders of magnitude slower: never picked


def fp16_weights_native() -> bool:
    """fbgemm's fp16 GEMM: an x86 CPU with AVX2 (F16C comes with it), as ATen sees it."""
    avx2 = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
    return avx2 and "fbgemm" in torch.backends.quantized.supported_engines
