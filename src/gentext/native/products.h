// The step's products in the weight formats of models/weights.py (rnn.h's and mingru.h's steps make them).
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/native/quantized/PackedParams.h>
#include <ATen/ops/add.h>
#include <ATen/ops/addcmul.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/clamp_min.h>
#include <ATen/ops/div.h>
#include <ATen/ops/linalg_vector_norm.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <torch/csrc/jit/api/object.h>
#include <torch/csrc/utils/pybind.h>

#include <cmath>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <vector>

#include "direct.h"
#include "helper.h"

namespace py = pybind11;
using Packed = c10::intrusive_ptr<LinearPackedParamsBase>;

// models/weights.py's formats, as `Matmul.native()` names them.
// SCALED_INT8: int8 of inputs with no bound (each row divided by its largest magnitude first).
enum Kind { NONE = 0, FP32 = 1, HALF = 2, FP16 = 3, INT8 = 4, SCALED_INT8 = 5 };

static Packed unpack(const py::object& obj) {
  auto script_object = obj.cast<torch::jit::Object>();
  return c10::IValue(script_object._ivalue()).toCustomClass<LinearPackedParamsBase>();
}

// Rows a thread takes of a batch's copies and sums (at::parallel_for): fewer are not worth waking
// the OpenMP team for, and a lone row's step runs on one thread anyway.
constexpr int64_t COPY_ROWS = 16;

// Rows [0, rows) of `parts` side by side into `o` (rows of `width` floats), each plus its row of
// `plus` where given: a batch's rows split between torch's threads.
static void place_rows(std::initializer_list<at::Tensor> parts, int64_t rows, int64_t width, float* o,
                       const float* plus) {
  at::parallel_for(0, rows, COPY_ROWS, [&](int64_t begin, int64_t end) {
    int64_t offset = 0;
    for (const auto& part : parts) {
      const int64_t w = part.size(1);
      const float* in = part.data_ptr<float>();
      for (int64_t r = begin; r < end; ++r) {
        float* to = o + r * width + offset;
        if (plus == nullptr) {
          std::memcpy(to, in + r * w, w * sizeof(float));
          continue;
        }
        const float* base = plus + r * width + offset;
        for (int64_t j = 0; j < w; ++j) to[j] = base[j] + in[r * w + j];
      }
      offset += w;
    }
  });
}

// at::cat({at::cat(parts, 1), anchor}): the parts' rows side by side and the anchor row below, copied
// into one new tensor instead of two.
static at::Tensor rows_and_anchor(std::initializer_list<at::Tensor> parts, const at::Tensor& anchor) {
  const int64_t rows = parts.begin()->size(0), width = anchor.size(1);
  bool plain = anchor.is_contiguous() && anchor.scalar_type() == at::kFloat;
  for (const auto& part : parts) plain = plain && part.is_contiguous() && part.scalar_type() == at::kFloat;
  if (!plain) return at::cat({parts.size() == 1 ? *parts.begin() : at::cat(parts, 1), anchor});
  int64_t total = 0;
  for (const auto& part : parts) total += part.size(1);
  TORCH_CHECK(total == width, "a product's input is not its weights' width");
  auto out = at::empty({rows + 1, width}, anchor.options());
  float* o = out.data_ptr<float>();
  place_rows(parts, rows, width, o, nullptr);
  std::memcpy(o + rows * width, anchor.data_ptr<float>(), width * sizeof(float));
  return out;
}

// at::add(plus, at::cat(pieces, 1).narrow(0, 0, rows)) (no `plus`: without the add): the first `rows`
// rows of an int8 product's pieces side by side, the anchor row left out, in one new tensor.
static at::Tensor joined(std::initializer_list<at::Tensor> pieces, int64_t rows, const at::Tensor& plus) {
  int64_t width = 0;
  for (const auto& piece : pieces) width += piece.size(1);
  const bool adding = plus.defined();
  const bool plain = plus.is_contiguous() && plus.scalar_type() == at::kFloat;
  if (adding && !(plain && plus.sizes() == at::IntArrayRef{rows, width})) {
    return at::add(plus, joined(pieces, rows, at::Tensor()));
  }
  auto out = at::empty({rows, width}, pieces.begin()->options());
  place_rows(pieces, rows, width, out.data_ptr<float>(), adding ? plus.data_ptr<float>() : nullptr);
  return out;
}

// Steps of up to this many rows make their int8 products in `Direct` where it is given: its work
// per row is a whole pass over the weights, and from two rows on fbgemm's per-call work is repaid
// (benchmarks/RESULTS.md).
constexpr int64_t DIRECT_ROWS = 1;
// A scaled product (each row divided by its largest value) also leaves out the ATen calls that scale
// the rows and multiply them back, so the kernels' product repays its pass per row over more rows:
// while the rows' passes read no more than this many weight bytes in all (benchmarks/RESULTS.md).
constexpr int64_t SCALED_DIRECT_BYTES = 1 << 19;

// Int8Matmul.__call__ without `bounded` for the rows `direct` makes, its ATen calls as loops with
// their numbers: each row's largest magnitude (exact in any order) clamped at 1e-30, the row divided
// by it (one IEEE division each, as at::div's), the product, then bias + product x scale as
// at::addcmul's vector code makes it (`Direct::scale_back`: whole vectors, which outputs in blocks
// of 64 are) and + plus. Undefined where a row is not finite or a tensor is not plain: the ATen
// calls then make the numbers.
static at::Tensor scaled_direct(const Direct& direct, const at::Tensor& x, const at::Tensor& bias,
                                const at::Tensor& plus) {
  const int64_t rows = x.size(0), width = x.size(1), outputs = direct.outputs;
  auto plain = [](const at::Tensor& t) { return t.is_contiguous() && t.scalar_type() == at::kFloat; };
  if (!plain(x) || !plain(bias) || bias.numel() != outputs || outputs % 32 != 0) return at::Tensor();
  if (plus.defined() && !(plain(plus) && plus.sizes() == at::IntArrayRef{rows, outputs})) return at::Tensor();
  auto scaled = at::empty_like(x);
  std::vector<float> scales(rows);
  const float* in = x.data_ptr<float>();
  float* q = scaled.data_ptr<float>();
  for (int64_t r = 0; r < rows; ++r) {
    float most = 0.0f;
    for (int64_t k = 0; k < width; ++k) {
      const float a = std::fabs(in[r * width + k]);
      if (!(a <= std::numeric_limits<float>::max())) return at::Tensor();
      most = a > most ? a : most;
    }
    scales[r] = most < 1e-30f ? 1e-30f : most;
    for (int64_t k = 0; k < width; ++k) q[r * width + k] = in[r * width + k] / scales[r];
  }
  auto product = direct({scaled}, nullptr, at::Tensor());
  if (!product.defined()) return at::Tensor();
  direct.scale_back(product.data_ptr<float>(), rows, scales.data(), bias.data_ptr<float>(),
                    plus.defined() ? plus.data_ptr<float>() : nullptr);
  return product;
}

// One product x @ W^T + b in a weight format, as the format's Python __call__ computes it.
struct Op {
  int kind = NONE;
  at::Tensor weight_t, bias, anchor;
  Packed packed, low, high;  // int8: the outputs in two halves too, where worth splitting
  Direct direct;             // int8: a lone row's product of the kernels' own, where laid out for it

  // The product of `parts` side by side (one tensor, or [x, h]), `plus` added where given (a row of
  // the layer-0 table). With `helper`, an int8 product that has halves is made on two cores.
  at::Tensor operator()(std::initializer_list<at::Tensor> parts, Helper* helper = nullptr,
                        const at::Tensor& plus = at::Tensor()) const {
    static auto int8 = c10::Dispatcher::singleton()
                           .findSchemaOrThrow("quantized::linear_dynamic", "")
                           .typed<at::Tensor(at::Tensor, const Packed&, bool)>();
    if (kind == INT8) {
      if (direct.defined() && parts.begin()->size(0) <= DIRECT_ROWS) {
        auto y = direct(parts, low ? helper : nullptr, plus);  // split where fbgemm's would be
        if (y.defined()) return y;  // else an input out of the anchor's range: fbgemm below
      }
      auto input = rows_and_anchor(parts, anchor);  // the anchor row pins the range
      const int64_t rows = input.size(0) - 1;
      if (helper != nullptr && low) {
        at::Tensor y, y_high;
        helper->both([&] { y = int8.call(input, low, true); }, [&] { y_high = int8.call(input, high, true); });
        return joined({y, y_high}, rows, plus);
      }
      auto y = int8.call(input, packed, true);
      return plus.defined() ? joined({y}, rows, plus) : y.narrow(0, 0, rows);
    }
    if (kind == SCALED_INT8) {  // Int8Matmul.__call__ without `bounded`
      const auto& x = *parts.begin();
      const int64_t rows = x.size(0);
      const bool direct_rows =
          direct.defined() && (rows <= DIRECT_ROWS || rows * direct.outputs * direct.width <= SCALED_DIRECT_BYTES);
      if (direct_rows) {
        auto y = scaled_direct(direct, x, bias, plus);
        if (y.defined()) return y;
      }
      auto scale = at::linalg_vector_norm(x, std::numeric_limits<double>::infinity(), at::IntArrayRef{1}, true)
                       .clamp_min_(1e-30);  // max |x| per row
      auto scaled = at::div(x, scale);
      at::Tensor product;  // (rows, outputs), without the bias
      if (direct_rows) product = direct({scaled}, nullptr, at::Tensor());
      if (!product.defined()) {
        product = int8.call(rows_and_anchor({scaled}, anchor), packed, true).narrow(0, 0, rows);
      }
      auto y = at::addcmul(bias, product, scale);
      return plus.defined() ? at::add(plus, y) : y;
    }
    auto y = product(parts.size() == 1 ? *parts.begin() : at::cat(parts, 1));
    return plus.defined() ? at::add(plus, y) : y;
  }

  at::Tensor product(const at::Tensor& x) const {
    static auto fp16 = c10::Dispatcher::singleton()
                           .findSchemaOrThrow("quantized::linear_dynamic_fp16", "")
                           .typed<at::Tensor(at::Tensor, const Packed&)>();
    switch (kind) {
      case FP32:
        return at::addmm(bias, x, weight_t);
      case HALF:
        return at::addmm(bias, x.to(weight_t.scalar_type()), weight_t).to(at::kFloat);
      case FP16:
        return fp16.call(x, packed);
    }
    TORCH_CHECK(false, "a step operation without a product");
  }
};

// (weights, colsum, mult, bias, inverse, zero, wide) from Int8Matmul._direct(), where this CPU runs it
static Direct make_direct(const py::object& spec) {
  Direct direct;
  if (spec.is_none()) return direct;
  auto t = spec.cast<py::tuple>();
  direct.wide = t[6].cast<bool>();
  if (!direct_supported(direct.wide)) return direct;
  direct.weights = t[0].cast<at::Tensor>();
  direct.colsum = t[1].cast<at::Tensor>();
  direct.mult = t[2].cast<at::Tensor>();
  direct.bias = t[3].cast<at::Tensor>();
  direct.inverse = t[4].cast<float>();
  direct.zero = t[5].cast<float>();
  direct.outputs = direct.colsum.size(0);
  direct.width = direct.weights.numel() / direct.outputs;
  return direct;
}

// spec: None or (kind, weight_t, bias, packed, anchor, halves[, direct]), from Matmul.native()
static Op make_op(const py::object& spec) {
  Op op;
  if (spec.is_none()) return op;
  auto t = spec.cast<py::tuple>();
  op.kind = t[0].cast<int>();
  if (op.kind == FP32 || op.kind == HALF) {
    op.weight_t = t[1].cast<at::Tensor>();
    op.bias = t[2].cast<at::Tensor>();
  } else {
    op.packed = unpack(t[3]);
  }
  if (op.kind == SCALED_INT8) {
    op.bias = t[2].cast<at::Tensor>();
    op.anchor = t[4].cast<at::Tensor>();
    if (t.size() > 6) op.direct = make_direct(t[6]);
  }
  if (op.kind == INT8) {
    op.anchor = t[4].cast<at::Tensor>();
    if (!t[5].is_none()) {
      auto halves = t[5].cast<py::tuple>();
      op.low = unpack(halves[0]);
      op.high = unpack(halves[1]);
    }
    if (t.size() > 6) op.direct = make_direct(t[6]);
  }
  return op;
}
