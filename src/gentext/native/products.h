// The step's products in the weight formats of models/weights.py (kernels.cpp's step makes them).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/native/quantized/PackedParams.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <torch/csrc/jit/api/object.h>
#include <torch/csrc/utils/pybind.h>

#include <cstring>
#include <initializer_list>

#include "helper.h"

namespace py = pybind11;
using Packed = c10::intrusive_ptr<LinearPackedParamsBase>;

// models/weights.py's formats, as `Matmul.native()` names them.
enum Kind { NONE = 0, FP32 = 1, HALF = 2, FP16 = 3, INT8 = 4 };

static Packed unpack(const py::object& obj) {
  auto script_object = obj.cast<torch::jit::Object>();
  return c10::IValue(script_object._ivalue()).toCustomClass<LinearPackedParamsBase>();
}

// at::cat({at::cat(parts, 1), anchor}): the parts' rows side by side and the anchor row below, copied
// into one new tensor instead of two.
static at::Tensor rows_and_anchor(std::initializer_list<at::Tensor> parts, const at::Tensor& anchor) {
  const int64_t rows = parts.begin()->size(0), width = anchor.size(1);
  bool plain = anchor.is_contiguous() && anchor.scalar_type() == at::kFloat;
  for (const auto& part : parts) plain = plain && part.is_contiguous() && part.scalar_type() == at::kFloat;
  if (!plain) return at::cat({parts.size() == 1 ? *parts.begin() : at::cat(parts, 1), anchor});
  auto out = at::empty({rows + 1, width}, anchor.options());
  float* o = out.data_ptr<float>();
  int64_t offset = 0;
  for (const auto& part : parts) {
    const int64_t w = part.size(1);
    const float* in = part.data_ptr<float>();
    for (int64_t r = 0; r < rows; ++r) std::memcpy(o + r * width + offset, in + r * w, w * sizeof(float));
    offset += w;
  }
  TORCH_CHECK(offset == width, "a product's input is not its weights' width");
  std::memcpy(o + rows * width, anchor.data_ptr<float>(), width * sizeof(float));
  return out;
}

// One product x @ W^T + b in a weight format, as the format's Python __call__ computes it.
struct Op {
  int kind = NONE;
  at::Tensor weight_t, bias, anchor;
  Packed packed, low, high;  // int8: the outputs in two halves too, where worth splitting

  // The product of `parts` side by side (one tensor, or [x, h]). With `helper`, an int8 product
  // that has halves is made on two cores.
  at::Tensor operator()(std::initializer_list<at::Tensor> parts, Helper* helper = nullptr) const {
    static auto int8 = c10::Dispatcher::singleton()
                           .findSchemaOrThrow("quantized::linear_dynamic", "")
                           .typed<at::Tensor(at::Tensor, const Packed&, bool)>();
    static auto fp16 = c10::Dispatcher::singleton()
                           .findSchemaOrThrow("quantized::linear_dynamic_fp16", "")
                           .typed<at::Tensor(at::Tensor, const Packed&)>();
    if (kind == INT8) {
      auto input = rows_and_anchor(parts, anchor);  // the anchor row pins the range
      at::Tensor y, y_high;
      if (helper != nullptr && low) {
        helper->both([&] { y = int8.call(input, low, true); }, [&] { y_high = int8.call(input, high, true); });
        y = at::cat({y, y_high}, 1);
      } else {
        y = int8.call(input, packed, true);
      }
      return y.narrow(0, 0, y.size(0) - 1);
    }
    auto x = parts.size() == 1 ? *parts.begin() : at::cat(parts, 1);
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

// spec: None or (kind, weight_t, bias, packed, anchor, halves), from Matmul.native()
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
  if (op.kind == INT8) {
    op.anchor = t[4].cast<at::Tensor>();
    if (!t[5].is_none()) {
      auto halves = t[5].cast<py::tuple>();
      op.low = unpack(halves[0]);
      op.high = unpack(halves[1]);
    }
  }
  return op;
}
