// The recurrent step of the RNN kinds (LSTM, GRU, plain RNN) and the head after it: models/rnnstep.py's
// `step` as ATen calls from C++, with the LSTM cell's arithmetic between its activations as loops.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/TensorIterator.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/index_select.h>
#include <ATen/ops/lerp.h>
#include <ATen/ops/sigmoid.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/tanh.h>

#include <array>
#include <utility>
#include <vector>

#include "helper.h"
#include "products.h"

// An LSTM layer's cell for rows of its gates (B, 4H) in nn.LSTM's order i, f, g, o and the last c at
// c0 (B x H, contiguous), written into c_out (B, H) and h (B x H): models/rnnstep.py's `_lstm` with
// the operations between the activations as loops. Each loop rounds as the tensor operations do (a
// product, a product, their sum; no fused multiply-add: the build passes -ffp-contract=off).
// `split`: ATen may cut an activation's work between threads (false inside lstm_cell's pieces).
static void lstm_rows(const at::Tensor& gates, const float* c0, const at::Tensor& c_out, float* h, bool split) {
  const int64_t rows = gates.size(0), width = gates.size(1) / 4;
  // One sigmoid over all four gates gives each gate's numbers only where every gate starts on a
  // multiple of the activation's unrolled vector (32 floats covers every CPU) and ATen does not
  // cut the work between threads: elsewhere the last elements of a piece run ATen's scalar tail,
  // which rounds differently. There each gate gets a sigmoid of its own, as in Python.
  const bool whole = width % 32 == 0 && (!split || rows * 4 * width < at::internal::GRAIN_SIZE);
  std::array<at::Tensor, 3> sig;  // i, f, o
  std::array<const float*, 3> s;
  int64_t stride = width;  // between one row's gate and the next's
  if (whole) {
    sig[0] = at::sigmoid(gates);
    for (int k = 0; k < 3; ++k) s[k] = sig[0].data_ptr<float>() + std::array<int64_t, 3>{0, 1, 3}[k] * width;
    stride = 4 * width;
  } else {
    for (int k = 0; k < 3; ++k) {
      sig[k] = at::sigmoid(gates.narrow(1, std::array<int64_t, 3>{0, 1, 3}[k] * width, width)).contiguous();
      s[k] = sig[k].data_ptr<float>();
    }
  }
  auto cand = at::tanh(gates.narrow(1, 2 * width, width)).contiguous();
  const float* g = cand.data_ptr<float>();
  float* c = c_out.data_ptr<float>();
  for (int64_t r = 0; r < rows; ++r) {
    const float *i = s[0] + r * stride, *f = s[1] + r * stride;
    for (int64_t j = 0; j < width; ++j) {
      const float kept = f[j] * c0[r * width + j];
      const float added = i[j] * g[r * width + j];
      c[r * width + j] = kept + added;
    }
  }
  auto squashed = at::tanh(c_out);
  const float* t = squashed.data_ptr<float>();
  for (int64_t r = 0; r < rows; ++r) {
    const float* o = s[2] + r * stride;
    for (int64_t j = 0; j < width; ++j) h[r * width + j] = o[j] * t[r * width + j];
  }
}

// Rows a thread takes of a cell split between threads: below it the threads' start-up costs more
// than the rows' activations.
constexpr int64_t CELL_ROWS = 8;

// lstm_rows over all rows, in pieces of whole rows on torch's OpenMP threads where the batch is big
// enough, so no core waits through the activations for the next product. Each row gets the numbers
// it gets alone: every activation runs on whole rows, whose vectorised parts are the same wherever
// a piece starts.
static void lstm_cell(const at::Tensor& gates, const float* c0, const at::Tensor& c_out, float* h) {
  const int64_t rows = gates.size(0), width = gates.size(1) / 4;
  if (rows < 2 * CELL_ROWS || at::get_num_threads() < 2 || at::in_parallel_region()) {
    return lstm_rows(gates, c0, c_out, h, true);
  }
  at::parallel_for(0, rows, CELL_ROWS, [&](int64_t begin, int64_t end) {
    lstm_rows(gates.narrow(0, begin, end - begin), c0 + begin * width, c_out.narrow(0, begin, end - begin),
              h + begin * width, false);
  });
}

// models/rnnstep.py's `step` and the head after it.
struct RnnStep {
  bool gru;
  at::Tensor table;
  std::vector<std::pair<Op, Op>> layers;
  Op head;

  RnnStep(const std::string& kind, at::Tensor table, const py::list& layer_specs, const py::object& head_spec)
      : gru(kind == "gru"), table(std::move(table)), head(make_op(head_spec)) {
    for (auto item : layer_specs) {
      auto pair = item.cast<py::tuple>();
      layers.emplace_back(make_op(pair[0]), make_op(pair[1]));
    }
  }

  // ids (B,), h (and c) (layers, B, H) -> [the head's output (B, 1, V), or the last layer's (B, 1, H)
  // where there is no head here or `features`], new h[, new c]; `split`: the products on two cores
  std::vector<at::Tensor> operator()(const at::Tensor& ids, const at::Tensor& h_all,
                                     const c10::optional<at::Tensor>& c_all, bool features, bool split) const {
    // a lone row's table row is a view: the sum below makes the tensor index_select then add_ made
    auto rows = ids.size(0) == 1 ? table.narrow(0, ids.item<int64_t>(), 1) : table.index_select(0, ids);
    return run(rows, h_all, c_all, features, split);
  }

  // run_plain's step for one row: the id's logits (1, 1, V), new h[, new c]
  std::vector<at::Tensor> one(int64_t id, const at::Tensor& h, const c10::optional<at::Tensor>& c, bool split) const {
    return run(table.narrow(0, id, 1), h, c, false, split);
  }

  // `rows`: the layer-0 table's rows of this step's ids (B, G*H)
  std::vector<at::Tensor> run(const at::Tensor& rows, const at::Tensor& h_all, const c10::optional<at::Tensor>& c_all,
                              bool features, bool split) const {
    Helper* helper = split ? &Helper::get() : nullptr;
    at::Tensor x;
    std::vector<at::Tensor> new_h;
    const bool lstm = !gru && c_all.has_value();
    at::Tensor h_out = lstm ? at::empty_like(h_all, at::MemoryFormat::Contiguous) : at::Tensor();
    at::Tensor c_out = lstm ? at::empty_like(*c_all, at::MemoryFormat::Contiguous) : at::Tensor();
    at::Tensor c_prev = lstm ? c_all->contiguous() : at::Tensor();
    for (size_t layer = 0; layer < layers.size(); ++layer) {
      const auto& [x_op, h_op] = layers[layer];
      const auto index = static_cast<int64_t>(layer);
      auto h = h_all.select(0, index);
      if (gru) {
        auto xw = x.defined() ? x_op({x}, helper) : rows;
        auto hw = h_op({h}, helper);
        auto xs = xw.chunk(3, 1), hs = hw.chunk(3, 1);
        auto r = at::sigmoid(xs[0] + hs[0]);
        auto z = at::sigmoid(xs[1] + hs[1]);
        x = at::lerp(at::tanh(xs[2] + r * hs[2]), h, z);
      } else {
        auto gates = x.defined() ? x_op({x, h}, helper) : h_op({h}, helper, rows);
        if (lstm) {
          x = h_out.select(0, index);
          const int64_t offset = index * x.numel();
          lstm_cell(gates, c_prev.data_ptr<float>() + offset, c_out.select(0, index), h_out.data_ptr<float>() + offset);
          continue;
        }
        x = at::tanh(gates);
      }
      new_h.push_back(x);
    }
    auto out = (features || head.kind == NONE) ? x : head({x}, helper);
    if (lstm) return {out.unsqueeze(1), h_out, c_out};
    return {out.unsqueeze(1), at::stack(new_h)};
  }
};
