// A mixed run's rows drawn and read ahead (models/mixture.py's `draw_ahead`): each token the plain
// draw (a lone row's or a batch's, as runs.h draws), then what the engine's step makes of it through
// MixtureModel.forward — the network's outputs and head, a neural cache over them where the run has
// one (CacheModel.forward for the model's own samples: cache.h), the chain's row of the new context
// (chain.h), and the two mixed — as the same calls in the same order, so the ids, the generator's
// stream and the states are the token-by-token path's. Token by token, the Python around those parts
// cost as much as the parts.
#pragma once

#include <ATen/ops/cat.h>
#include <ATen/ops/full.h>
#include <ATen/ops/log_softmax.h>
#include <ATen/ops/logaddexp.h>
#include <torch/csrc/utils/pybind.h>

#include <vector>

#include "cache.h"
#include "chain.h"
#include "draw.h"
#include "mingru.h"
#include "rnn.h"
#include "runs.h"

namespace py = pybind11;

// What a mixture adds to its network's step: the chain's rows and the two weights' logs
// (MixtureModel._logs), and a cache's sharpness, gate, similarity and weights' logs (CacheModel's).
// Without a chain (None: a CacheModel alone) the step ends with the cached network's numbers.
struct MixSpec {
  py::object chain_object;  // keeps the chain's rows alive
  ChainRows* chain = nullptr;
  double mix_net, mix_chain;
  bool cached = false, cosine = false;
  double theta = 0, gate = 0, cache_net = 0, cache_own = 0;

  // cache: None, or (theta, gate, cosine, log(1 - lambda), log(lambda))
  MixSpec(py::object chain_rows, double mix_net, double mix_chain, const py::object& cache)
      : chain_object(std::move(chain_rows)), mix_net(mix_net), mix_chain(mix_chain) {
    if (!chain_object.is_none()) chain = chain_object.cast<ChainRows*>();
    if (cache.is_none()) return;
    auto spec = cache.cast<py::tuple>();
    cached = true;
    theta = spec[0].cast<double>(), gate = spec[1].cast<double>(), cosine = spec[2].cast<bool>();
    cache_net = spec[3].cast<double>(), cache_own = spec[4].cast<double>();
  }
};

// A network's outputs for ids (B,) (B, 1, H), the state carried, and its head's logits from them (B, V):
// `features` and `readout` of models/rnn.py and models/mingru.py on the step path.
static at::Tensor features_of(const RnnStep& step, const at::Tensor& ids, at::Tensor& h, c10::optional<at::Tensor>& c,
                              bool split) {
  auto out = step(ids, h, c, true, split);
  carry(out, h, c);
  return out[0];
}

static at::Tensor head_of(const RnnStep& step, const at::Tensor& y, bool split) {
  return step.head({y.select(1, 0)}, split ? &Helper::get() : nullptr);
}

static at::Tensor features_of(const MinGruStep& step, const at::Tensor& ids, at::Tensor& h,
                              c10::optional<at::Tensor>&, bool) {
  auto out = step(ids, h, true);
  h = out[1];
  return out[0];
}

static at::Tensor head_of(const MinGruStep& step, const at::Tensor& y, bool) { return step.head({y.select(1, 0)}); }

// The mixture's log-probabilities (B, V) after reading ids (B,): `keys` and `nexts` the cache's
// window, `context` (B, order-1) the chain's last ids (both carried).
template <class Net>
static at::Tensor mixed_step(const Net& net, const MixSpec& mix, const at::Tensor& ids, at::Tensor& h,
                             c10::optional<at::Tensor>& c, const at::Tensor& keys, at::Tensor& nexts,
                             at::Tensor& context, bool split) {
  auto y = features_of(net, ids, h, c, split);
  auto net_logp = at::log_softmax(head_of(net, y, split).to(at::kFloat), -1).unsqueeze(1);  // (B, 1, V)
  if (mix.cached) {
    auto cached = cache_token(y.to(at::kFloat), keys, nexts, net_logp, mix.theta, mix.gate, mix.cosine,
                              mix.cache_net, mix.cache_own);
    if (mix.chain == nullptr) return cached.select(1, 0);  // CacheModel.forward's
    net_logp = at::log_softmax(cached, -1);  // MixtureModel.forward's, over the cached network's
  }
  const int64_t tail = context.size(1);
  context = at::cat({context, ids.unsqueeze(1)}, 1).narrow(1, 1, tail).contiguous();  // MarkovModel._step's
  auto chain_logp = mix.chain->rows(context.data_ptr<int64_t>(), context.size(0), tail).unsqueeze(1);
  return at::logaddexp(at::add(net_logp, mix.mix_net), at::add(chain_logp, mix.mix_chain)).select(1, 0);
}

// One token a row of the model's own samples, ids (B,), read as MixtureModel.forward reads it.
// -> logits (B, 1, V), nexts, context, h[, c]
template <class Net>
static py::tuple read_mixed(const Net& net, const MixSpec& mix, const at::Tensor& ids, at::Tensor h,
                            c10::optional<at::Tensor> c, const at::Tensor& keys, at::Tensor nexts, at::Tensor context,
                            bool split) {
  at::Tensor logits;
  {
    py::gil_scoped_release released;
    logits = mixed_step(net, mix, ids, h, c, keys, nexts, context, split).unsqueeze(1);
  }
  return with_state(h, c, logits, nexts, context);
}

// A mixed run's lone row (runs.h's draw_lone) or batch (draw_batch) drawn and read ahead. keys (B, W, H)
// and nexts (B, W): the cache's window (ignored without a cache); context (B, order-1).
// -> [ids] or ids (count, B), logits (B, V), nexts, context, h[, c]
template <class Net>
static py::tuple run_mixed(const Net& net, const MixSpec& mix, at::Tensor logits, at::Tensor h,
                           c10::optional<at::Tensor> c, const at::Tensor& keys, at::Tensor nexts, at::Tensor context,
                           int64_t count, double temperature, const c10::optional<at::Tensor>& suppress,
                           const py::object& generator_object, int64_t end_id, bool read_last, bool split) {
  const Drawing how{temperature, suppress, Source(generator_object), end_id, read_last};
  auto read = [&](const at::Tensor& ids) { return mixed_step(net, mix, ids, h, c, keys, nexts, context, split); };
  std::vector<int64_t> lone;
  at::Tensor batch;
  {
    py::gil_scoped_release released;
    if (logits.size(0) > 1) {
      batch = draw_batch(how, logits, count, read);
    } else {
      lone = draw_lone(how, logits, count, [&](int64_t id) { return read(at::full({1}, id, at::kLong)); });
    }
  }
  if (batch.defined()) return with_state(h, c, batch, logits, nexts, context);
  return with_state(h, c, lone, logits, nexts, context);
}
