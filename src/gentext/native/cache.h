// A neural cache's token while a model samples (models/cache.py: `CacheModel.forward` for one token
// a row that reads the window as it stands, `cache_probs` without `remember`): the same ATen calls
// in the same order, from C++, so the numbers are the Python path's bit for bit
// (tests/native/test_cache.py). A sampled token made some thirty of them from Python, each with its
// frames around it: more than the step of the network under it.
#pragma once

#include <ATen/ATen.h>
#include <torch/csrc/utils/pybind.h>

#include <algorithm>
#include <limits>
#include <vector>

namespace py = pybind11;

constexpr int64_t EMPTY_SLOT = -2, PENDING_SLOT = -1;  // models/cache.py's EMPTY and PENDING

// The window's followers as a sampled token keeps them: the newest output's, where it waits
// (PENDING: not given text), made EMPTY in a copy (`follow` is `nexts` as read).
static void keep_followers(at::Tensor& nexts, const at::Tensor& follow, int64_t rows, int64_t window) {
  const int64_t* next = follow.data_ptr<int64_t>();
  bool pending = false;
  for (int64_t b = 0; b < rows; ++b) pending |= next[b * window + window - 1] == PENDING_SLOT;
  if (!pending) return;
  nexts = follow.clone();
  int64_t* kept = nexts.data_ptr<int64_t>();
  for (int64_t b = 0; b < rows; ++b) {
    if (kept[b * window + window - 1] == PENDING_SLOT) kept[b * window + window - 1] = EMPTY_SLOT;
  }
}

// y (B, 1, H) the network's outputs, keys (B, W, H) and nexts (B, W) the window, net_logp (B, 1, V)
// the network's log-probabilities; logs: log(1 - lambda), log(lambda). -> the cached network's
// log-probabilities (B, 1, V); `nexts` becomes the window's followers as kept (a PENDING newest made
// EMPTY). The reductions and transcendental functions are ATen's (the norm, the product, the softmax,
// the log, logaddexp); between them, loops make each elementwise operation's numbers (a float
// product with the scalar cast to float, a mask, the followers' sum in slot order as scatter_add sums
// them), and a row the cache is not heard in is the network's row untouched, as `where` leaves it:
// where no row can be heard (none holds an output, or a gated cache holds under half a window of
// them in every row: a short prompt's, since samples are not kept), the window is not read at all.
static at::Tensor cache_token(const at::Tensor& y, const at::Tensor& keys, at::Tensor& nexts,
                              const at::Tensor& net_logp, double theta, double gate, bool cosine, double log_net,
                              double log_cache) {
  const int64_t rows = keys.size(0), window = keys.size(1), vocab = net_logp.size(-1);
  auto follow = nexts.contiguous();
  const int64_t* next = follow.data_ptr<int64_t>();
  std::vector<uint8_t> filled(rows, 0), heard(rows, 0);
  std::vector<int64_t> valid(rows, 0);
  bool may_hear = false;  // _heard: a row holding nothing, or (gated) under half a window of outputs, is not
  for (int64_t b = 0; b < rows; ++b) {
    for (int64_t j = 0; j < window; ++j) valid[b] += next[b * window + j] >= 0;
    filled[b] = valid[b] > 0;
    may_hear |= filled[b] && (gate <= 0 || 2 * valid[b] >= window);
  }
  if (!may_hear) {  // the network's rows, as `where` leaves them, without reading the window
    keep_followers(nexts, follow, rows, window);
    return net_logp;
  }
  auto queries = cosine ? at::div(y, at::linalg_vector_norm(y, 2.0, at::IntArrayRef{-1}, true)
                                         .clamp_min(1e-12)
                                         .expand_as(y))
                        : y;
  auto dots = at::bmm(keys, queries.transpose(1, 2)).contiguous();  // (B, W, 1): _same_slots
  // _weights: theta x products over the filled slots (-inf elsewhere; all 0 in a row with none)
  auto scores = at::empty({rows, 1, window}, dots.options());
  const float scale = static_cast<float>(theta);
  for (int64_t b = 0; b < rows; ++b) {
    const int64_t* slot = next + b * window;
    const float* dot = dots.data_ptr<float>() + b * window;
    float* score = scores.data_ptr<float>() + b * window;
    for (int64_t j = 0; j < window; ++j) {
      score[j] = !filled[b] ? 0.0f : slot[j] >= 0 ? dot[j] * scale : -std::numeric_limits<float>::infinity();
    }
  }
  auto soft = at::softmax(scores, -1);
  auto probs = at::zeros({rows, 1, vocab}, dots.options());
  bool any_heard = false;
  for (int64_t b = 0; b < rows; ++b) {
    const int64_t* slot = next + b * window;
    const float* weight = soft.data_ptr<float>() + b * window;
    float* p = probs.data_ptr<float>() + b * vocab;
    for (int64_t j = 0; j < window; ++j) {  // reduce's vocabulary sum of the weights (0 where a slot is empty)
      p[std::max<int64_t>(slot[j], 0)] += slot[j] >= 0 ? weight[j] : 0.0f;
    }
    heard[b] = filled[b];
    if (gate > 0) {  // _heard: the top token's share reaches the gate among half a window of outputs
      const float top = *std::max_element(p, p + vocab);
      heard[b] = filled[b] && top >= static_cast<float>(gate) && 2 * valid[b] >= window;
    }
    any_heard |= heard[b] != 0;
  }
  keep_followers(nexts, follow, rows, window);
  if (!any_heard) return net_logp;
  // CacheModel.parts and forward, where the cache is heard
  auto heard_rows = at::from_blob(heard.data(), {rows, 1, 1}, at::kBool).clone();
  auto cache_logp = at::where(heard_rows, probs.clamp_min(1e-30).log(), net_logp);
  auto with_cache = at::logaddexp(at::add(net_logp, log_net), at::add(cache_logp, log_cache));
  return at::where(heard_rows, with_cache, net_logp);
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
