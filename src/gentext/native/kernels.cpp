// Compiled per-token kernels: the recurrent step, one row's plain draw and runs of the two, as the same ATen
// operations the Python path makes, in the same order on the same shapes, so every number is the
// same bit for bit (tests/native/test_kernels.py compares them). What they save is the Python
// between the operations, a large share of one stream's token (benchmarks/RESULTS.md).
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/native/quantized/PackedParams.h>
#include <ATen/ops/add.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/div.h>
#include <ATen/ops/index_fill.h>
#include <ATen/ops/index_select.h>
#include <ATen/ops/isfinite.h>
#include <ATen/ops/lerp.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/rand.h>
#include <ATen/ops/sigmoid.h>
#include <ATen/ops/softmax.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/tanh.h>
#include <torch/csrc/Generator.h>
#include <torch/csrc/jit/api/object.h>
#include <torch/csrc/utils/pybind.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "helper.h"

namespace py = pybind11;
using Packed = c10::intrusive_ptr<LinearPackedParamsBase>;

// models/weights.py's formats, as `Matmul.native()` names them.
enum Kind { NONE = 0, FP32 = 1, HALF = 2, FP16 = 3, INT8 = 4 };

static Packed unpack(const py::object& obj) {
  auto script_object = obj.cast<torch::jit::Object>();
  return c10::IValue(script_object._ivalue()).toCustomClass<LinearPackedParamsBase>();
}

// One product x @ W^T + b in a weight format, as the format's Python __call__ computes it.
struct Op {
  int kind = NONE;
  at::Tensor weight_t, bias, anchor;
  Packed packed, low, high;  // int8: the outputs in two halves too, where worth splitting

  // With `helper`, an int8 product that has halves is made on two cores.
  at::Tensor operator()(const at::Tensor& x, Helper* helper = nullptr) const {
    static auto int8 = c10::Dispatcher::singleton()
                           .findSchemaOrThrow("quantized::linear_dynamic", "")
                           .typed<at::Tensor(at::Tensor, const Packed&, bool)>();
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
      case INT8: {
        auto input = at::cat({x, anchor});  // the anchor row pins the range
        at::Tensor y, y_high;
        if (helper != nullptr && low) {
          helper->both([&] { y = int8.call(input, low, true); }, [&] { y_high = int8.call(input, high, true); });
          y = at::cat({y, y_high}, 1);
        } else {
          y = int8.call(input, packed, true);
        }
        return y.narrow(0, 0, y.size(0) - 1);
      }
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
    Helper* helper = split ? &Helper::get() : nullptr;
    at::Tensor x;
    std::vector<at::Tensor> new_h, new_c;
    for (size_t layer = 0; layer < layers.size(); ++layer) {
      const auto& [x_op, h_op] = layers[layer];
      auto h = h_all.select(0, static_cast<int64_t>(layer));
      if (gru) {
        auto xw = x.defined() ? x_op(x, helper) : table.index_select(0, ids);
        auto hw = h_op(h, helper);
        auto xs = xw.chunk(3, 1), hs = hw.chunk(3, 1);
        auto r = at::sigmoid(xs[0] + hs[0]);
        auto z = at::sigmoid(xs[1] + hs[1]);
        x = at::lerp(at::tanh(xs[2] + r * hs[2]), h, z);
      } else {
        auto gates = x.defined() ? x_op(at::cat({x, h}, 1), helper) : table.index_select(0, ids).add_(h_op(h, helper));
        if (!c_all.has_value()) {
          x = at::tanh(gates);
        } else {
          auto g = gates.chunk(4, 1);  // nn.LSTM's order: i, f, g, o
          auto c = at::sigmoid(g[1]) * c_all->select(0, static_cast<int64_t>(layer)) + at::sigmoid(g[0]) * at::tanh(g[2]);
          x = at::sigmoid(g[3]) * at::tanh(c);
          new_c.push_back(c);
        }
      }
      new_h.push_back(x);
    }
    auto out = (features || head.kind == NONE) ? x : head(x, helper);
    std::vector<at::Tensor> result{out.unsqueeze(1), at::stack(new_h)};
    if (!new_c.empty()) result.push_back(at::stack(new_c));
    return result;
  }
};

// The first largest logit of one row (1, V), as sampler.py's greedy rule picks it: -1 where no
// logit is finite (every token forbidden); a NaN counts as the largest, as torch.argmax has it.
static int64_t argmax_one(const at::Tensor& logits) {
  const int64_t chosen = logits.argmax(-1).item<int64_t>();
  if (std::isfinite(logits.select(0, 0)[chosen].item<float>())) return chosen;
  return at::isfinite(logits).any().item<bool>() ? chosen : -1;
}

// One row's next id under plain settings (a temperature and suppressed ids), chosen as
// inference/sampler.py's one-row path chooses it: the argmax at temperature 0 (no draw from the
// generator), else one draw; -1 where no token is allowed.
static int64_t draw_one(const at::Tensor& logits_in, double temperature, const c10::optional<at::Tensor>& suppress,
                        at::Generator generator) {
  auto logits = logits_in.to(at::kFloat);
  if (suppress.has_value()) logits = logits.index_fill(-1, *suppress, -std::numeric_limits<double>::infinity());
  if (temperature == 0) return argmax_one(logits);
  auto uniform = at::rand({1}, generator, at::kFloat);
  if (temperature != 1.0) logits = logits / temperature;
  auto cdf = at::softmax(logits.to(at::kFloat), -1).to(at::kDouble).cumsum(-1).contiguous();
  const double* p = cdf.data_ptr<double>();  // read in place: no tensor per number
  const int64_t vocab = cdf.size(-1);
  const double total = p[vocab - 1];
  if (!(total > 0)) return -1;
  const double target = static_cast<double>(*uniform.data_ptr<float>()) * total;
  // torch.searchsorted(right=True) on a non-decreasing row: the first entry above the target
  const int64_t chosen = std::upper_bound(p, p + vocab, target) - p;
  return std::min<int64_t>(chosen, vocab - 1);
}

static at::Generator generator_of(const py::object& generator_object) {
  return reinterpret_cast<THPGenerator*>(generator_object.ptr())->cdata;
}

static int64_t plain_draw(const at::Tensor& logits, double temperature, const c10::optional<at::Tensor>& suppress,
                          const py::object& generator_object) {
  return draw_one(logits, temperature, suppress, generator_of(generator_object));
}

// Up to `count` tokens of one row drawn and read in turn without returning to Python: each the
// draw above from the last logits (1, V), then the step on it — the calls the engine's one-row
// path makes per token, in the same order, so the ids, the generator's stream and the state
// are the same. Stops after the end id or a row without an allowed token (not read); after the
// last draw the step runs only with `read_last`. -> [ids], logits (1, V), h[, c]
static py::tuple run_plain(const RnnStep& step, at::Tensor logits, at::Tensor h, c10::optional<at::Tensor> c,
                           int64_t count, double temperature, const c10::optional<at::Tensor>& suppress,
                           const py::object& generator_object, int64_t end_id, bool read_last, bool split) {
  auto generator = generator_of(generator_object);
  std::vector<int64_t> ids;
  {
    py::gil_scoped_release released;
    for (int64_t i = 0; i < count; ++i) {
      const int64_t id = draw_one(logits, temperature, suppress, generator);
      ids.push_back(id);
      if (id < 0 || id == end_id || (i == count - 1 && !read_last)) break;
      auto out = step(at::full({1}, id, at::kLong), h, c, false, split);
      logits = out[0].select(1, 0);
      h = out[1];
      if (c.has_value()) c = out[2];
    }
  }
  if (c.has_value()) return py::make_tuple(ids, logits, h, *c);
  return py::make_tuple(ids, logits, h);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  py::class_<RnnStep>(m, "RnnStep")
      .def(py::init<const std::string&, at::Tensor, const py::list&, const py::object&>())
      .def("__call__", &RnnStep::operator(), py::call_guard<py::gil_scoped_release>());
  m.def("plain_draw", &plain_draw);
  m.def("split_products", [] { return Helper::get().splits.load(); });
  m.def("run_plain", &run_plain);
}
