// A neural cache's token while a model samples (models/cache.py: `CacheModel.forward` for one token
// a row that reads the window as it stands, `cache_probs` without `remember`): the same ATen calls
// in the same order, from C++, so the numbers are the Python path's bit for bit
// (tests/native/test_cache.py). A sampled token made some thirty of them from Python, each with its
// frames around it: more than the step of the network under it.
#pragma once

#include <ATen/ATen.h>
#include <torch/csrc/utils/pybind.h>

#include <limits>

namespace py = pybind11;

constexpr int64_t EMPTY_SLOT = -2, PENDING_SLOT = -1;  // models/cache.py's EMPTY and PENDING

// y (B, 1, H) the network's outputs, keys (B, W, H) and nexts (B, W) the window, net_logp (B, 1, V)
// the network's log-probabilities; logs: log(1 - lambda), log(lambda). -> the cached network's
// log-probabilities (B, 1, V); `nexts` becomes the window's followers as kept (a PENDING newest made
// EMPTY).
static at::Tensor cache_token(const at::Tensor& y, const at::Tensor& keys, at::Tensor& nexts,
                              const at::Tensor& net_logp, double theta, double gate, bool cosine, double log_net,
                              double log_cache) {
  auto queries = cosine ? at::div(y, at::linalg_vector_norm(y, 2.0, at::IntArrayRef{-1}, true)
                                         .clamp_min(1e-12)
                                         .expand_as(y))
                        : y;
  const int64_t window = keys.size(1), vocab = net_logp.size(-1);
  // _same_slots
  auto dots = at::bmm(keys.narrow(1, 0, window), queries.transpose(1, 2)).transpose(1, 2);
  auto slot_next = nexts.unsqueeze(1).narrow(2, 0, window).expand({-1, queries.size(1), -1});
  auto valid = at::ge(slot_next, 0);
  auto filled = valid.any(-1);
  auto last = nexts.narrow(1, nexts.size(1) - 1, 1);
  auto pending = at::eq(last, PENDING_SLOT);
  if (pending.any().item<bool>()) {
    nexts = at::cat({nexts.narrow(1, 0, nexts.size(1) - 1), last.masked_fill(pending, EMPTY_SLOT)}, 1);
  }
  // _weights, then reduce's vocabulary sum and _heard
  auto scores = at::mul(dots, theta)
                    .masked_fill(at::bitwise_not(valid), -std::numeric_limits<double>::infinity())
                    .masked_fill(at::bitwise_not(filled.unsqueeze(-1)), 0.0);
  auto weights = at::mul(at::softmax(scores, -1), valid);
  auto followers = slot_next.clamp_min(0);
  auto probs = at::zeros({weights.size(0), weights.size(1), vocab}, weights.options())
                   .scatter_add_(2, followers, weights);
  auto heard = filled;
  if (gate > 0) {
    auto sure = at::ge(probs.amax(-1), gate);
    auto enough = at::ge(at::mul(valid.sum(-1), 2), valid.size(-1));
    heard = at::bitwise_and(at::bitwise_and(filled, sure), enough);
  }
  // CacheModel.parts and forward
  heard = heard.unsqueeze(-1);
  auto cache_logp = at::where(heard, probs.clamp_min(1e-30).log(), net_logp);
  auto with_cache = at::logaddexp(at::add(net_logp, log_net), at::add(cache_logp, log_cache));
  return at::where(heard, with_cache, net_logp);
}

// cache_token for Python: -> (the cached network's log-probabilities, the window's followers as kept)
static py::tuple cache_sample(const at::Tensor& y, const at::Tensor& keys, at::Tensor nexts, const at::Tensor& net_logp,
                              double theta, double gate, bool cosine, double log_net, double log_cache) {
  at::Tensor out;
  {
    py::gil_scoped_release released;
    out = cache_token(y, keys, nexts, net_logp, theta, gate, cosine, log_net, log_cache);
  }
  return py::make_tuple(out, nexts);
}
