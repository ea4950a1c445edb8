// models/mingru.py's step (`MinGRULayer.step` for each layer, then the norm and the head), as the
// same ATen operations in the same order, so the numbers are the Python step's bit for bit.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/add.h>
#include <ATen/ops/embedding.h>
#include <ATen/ops/full.h>
#include <ATen/ops/ge.h>
#include <ATen/ops/gelu.h>
#include <ATen/ops/index_select.h>
#include <ATen/ops/layer_norm.h>
#include <ATen/ops/lerp.h>
#include <ATen/ops/sigmoid.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/where.h>
#include <torch/csrc/utils/pybind.h>

#include <vector>

#include "products.h"

// nn.LayerNorm's forward: spec (weight, bias, eps)
struct Norm {
  at::Tensor weight, bias;
  double eps = 1e-5;

  explicit Norm(const py::object& spec) {
    auto t = spec.cast<py::tuple>();
    weight = t[0].cast<at::Tensor>();
    bias = t[1].cast<at::Tensor>();
    eps = t[2].cast<double>();
  }
  at::Tensor operator()(const at::Tensor& x) const { return at::layer_norm(x, {weight.size(0)}, weight, bias, eps); }
};

struct MinGruLayer {
  Norm norm, mlp_norm;
  Op gates, up, down;

  // spec: (norm, gates, mlp_norm, up, down)
  explicit MinGruLayer(const py::tuple& spec)
      : norm(spec[0]), mlp_norm(spec[2]), gates(make_op(spec[1])), up(make_op(spec[3])), down(make_op(spec[4])) {}

  // x (B, D), h (B, D) -> output, new h; `z` and `positive` (h~): this token's gates where a table
  // holds them (the first layer's of an int8 step), else computed here
  std::pair<at::Tensor, at::Tensor> operator()(const at::Tensor& x, const at::Tensor& h, at::Tensor z = {},
                                               at::Tensor positive = {}) const {
    if (!z.defined()) {
      auto parts = gates({norm(x)}).chunk(2, -1);
      z = at::sigmoid(parts[0]);
      const auto& candidate = parts[1];
      positive = at::where(at::ge(candidate, 0), at::add(candidate, 0.5), at::sigmoid(candidate));
    }
    auto new_h = at::lerp(h, positive, z);  // (1 - z) h + z h~
    auto y = at::add(x, new_h);
    return {at::add(y, down({at::gelu(up({mlp_norm(y)}), "none")})), new_h};
  }
};

struct MinGruStep {
  at::Tensor embedding;
  std::vector<MinGruLayer> layers;
  Norm norm;
  Op head;
  at::Tensor first_z, first_candidate;  // the first layer's gates of every id (models/mingru.py), or undefined

  MinGruStep(at::Tensor embedding, const py::list& layer_specs, const py::object& norm_spec,
             const py::object& head_spec, const py::object& first)
      : embedding(std::move(embedding)), norm(norm_spec), head(make_op(head_spec)) {
    for (auto item : layer_specs) layers.emplace_back(item.cast<py::tuple>());
    if (!first.is_none()) {
      auto table = first.cast<py::tuple>();
      first_z = table[0].cast<at::Tensor>();
      first_candidate = table[1].cast<at::Tensor>();
    }
  }

  // ids (B,), h (layers, B, D) -> [the head's output (B, 1, V), or with `features` the normed
  // output it reads (B, 1, D)], new h
  std::vector<at::Tensor> operator()(const at::Tensor& ids, const at::Tensor& h_all, bool features) const {
    auto x = at::embedding(embedding, ids);
    std::vector<at::Tensor> carried;
    for (size_t i = 0; i < layers.size(); ++i) {
      const bool table = i == 0 && first_z.defined();
      auto z = table ? at::index_select(first_z, 0, ids) : at::Tensor();
      auto positive = table ? at::index_select(first_candidate, 0, ids) : at::Tensor();
      auto [y, h] = layers[i](x, h_all.select(0, static_cast<int64_t>(i)), z, positive);
      x = y;
      carried.push_back(h);
    }
    auto y = norm(x);
    auto out = features ? y : head({y});
    return {out.unsqueeze(1), at::stack(carried)};
  }

  // run_plain's step for one row: the id's logits (1, 1, V), new h
  std::vector<at::Tensor> one(int64_t id, const at::Tensor& h, const c10::optional<at::Tensor>&, bool) const {
    return (*this)(at::full({1}, id, at::kLong), h, false);
  }
};
