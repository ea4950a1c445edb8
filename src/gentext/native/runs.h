// Runs of many tokens in one call: tokens drawn and read in turn (run_plain, run_rows) and a sequence
// read token by token (read), each making the calls the engine's or the model's Python loop makes,
// in the same order, so the ids, the generator's stream and the states are the same.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/clamp_min.h>
#include <ATen/ops/gather.h>
#include <ATen/ops/log_softmax.h>
#include <ATen/ops/rand.h>
#include <ATen/ops/stack.h>
#include <torch/csrc/Generator.h>
#include <torch/csrc/utils/pybind.h>

#include <utility>
#include <vector>

#include "draw.h"
#include "mingru.h"
#include "rnn.h"

namespace py = pybind11;

static at::Generator generator_of(const py::object& generator_object) {
  return reinterpret_cast<THPGenerator*>(generator_object.ptr())->cdata;
}

// The state a step returned (h, and c where the kind has one), carried into the next step.
static void carry(const std::vector<at::Tensor>& out, at::Tensor& h, c10::optional<at::Tensor>& c) {
  h = out[1];
  if (c.has_value()) c = out[2];
}

// (first..., h[, c]): what a run hands back to Python.
template <class... First>
static py::tuple with_state(const at::Tensor& h, const c10::optional<at::Tensor>& c, const First&... first) {
  if (c.has_value()) return py::make_tuple(first..., h, *c);
  return py::make_tuple(first..., h);
}

// Where a run's uniform numbers come from: a request's generator, or requests drawing together (a
// tuple of their generators and each one's rows), each row's number from its own request's generator
// in row order: torch.cat of torch.rand(counts[i], generator=generators[i]), as sampler.uniforms.
struct Source {
  std::vector<at::Generator> generators;
  std::vector<int64_t> counts;  // rows per generator; empty: one generator for every row

  Source(const py::list& generator_objects, std::vector<int64_t> rows) : counts(std::move(rows)) {
    for (const auto& item : generator_objects) {
      generators.push_back(generator_of(py::reinterpret_borrow<py::object>(item)));
    }
    TORCH_CHECK(generators.size() == counts.size() && !counts.empty(), "one count per generator");
  }

  explicit Source(const py::object& object) {
    if (!py::isinstance<py::tuple>(object)) {
      generators.push_back(generator_of(object));
      return;
    }
    auto pair = object.cast<py::tuple>();
    *this = Source(pair[0].cast<py::list>(), pair[1].cast<std::vector<int64_t>>());
  }

  // One number for each of `batch` rows.
  at::Tensor rows(int64_t batch) const {
    if (counts.empty()) return at::rand({batch}, generators[0], at::kFloat);
    std::vector<at::Tensor> parts;
    int64_t total = 0;
    for (size_t i = 0; i < counts.size(); ++i) {
      parts.push_back(at::rand({counts[i]}, generators[i], at::kFloat));
      total += counts[i];
    }
    TORCH_CHECK(total == batch, "the generators' rows are not the batch's");
    return at::cat(parts);
  }
};

// Requests drawing together for one token (sampler.uniforms), in one call instead of one Python call each.
static at::Tensor uniforms(const py::list& generator_objects, const std::vector<int64_t>& counts) {
  const Source source(generator_objects, counts);
  py::gil_scoped_release released;
  int64_t total = 0;
  for (auto n : counts) total += n;
  return source.rows(total);
}

static int64_t plain_draw(const at::Tensor& logits, double temperature, const c10::optional<at::Tensor>& suppress,
                          const py::object& generator_object) {
  return draw_one(logits, temperature, suppress, generator_of(generator_object));
}

// The draws of a run. Plain settings: a temperature and suppressed ids.
struct Drawing {
  double temperature;
  const c10::optional<at::Tensor>& suppress;
  Source source;
  int64_t end_id;
  bool read_last;
};

// Up to `count` tokens of one row drawn and read in turn without returning to Python: each the
// draw above from the last logits (1, V), then `read(id)` -> the next logits (1, V): the calls the
// engine's one-row path makes per token, in the same order, so the ids, the generator's stream and
// the state are the same. Stops after the end id or a row without an allowed token (not read); after
// the last draw it reads only with `read_last`. -> the ids; `logits` the last.
template <class Read>
static std::vector<int64_t> draw_lone(const Drawing& how, at::Tensor& logits, int64_t count, Read&& read) {
  std::vector<int64_t> ids;
  for (int64_t i = 0; i < count; ++i) {
    const int64_t id = draw_one(logits, how.temperature, how.suppress, how.source.generators[0]);
    ids.push_back(id);
    if (id < 0 || id == how.end_id || (i == count - 1 && !how.read_last)) break;
    logits = read(id);
  }
  return ids;
}

// draw_lone for a batch of rows (one request's samples, or requests under the same plain settings
// together): each token the choice of sampler.py's many-row path (at a temperature, torch.rand(B) from
// the generator, or each request's rows from its own: `Source`, then `draw_rows`; at 0 `greedy_rows`), then
// `read(ids)` -> the next logits (B, V) (a row without an allowed token reads 0, as the engine feeds
// it). Every row's end is its text's business, so it runs `count` tokens, or fewer once each row
// has drawn the end id or none in this run. -> ids (count, B); `logits` the last.
template <class Read>
static at::Tensor draw_batch(const Drawing& how, at::Tensor& logits, int64_t count, Read&& read) {
  std::vector<at::Tensor> drawn;
  const int64_t rows = logits.size(0);
  std::vector<bool> ended(rows, false);
  int64_t left = rows;
  for (int64_t i = 0; i < count; ++i) {
    auto ids = how.temperature == 0 ? greedy_rows(logits, how.suppress)
                                    : draw_rows(logits, how.temperature, how.suppress, how.source.rows(rows));
    drawn.push_back(ids);
    const int64_t* id = ids.data_ptr<int64_t>();
    for (int64_t r = 0; r < rows; ++r) {
      if (!ended[r] && (id[r] < 0 || id[r] == how.end_id)) ended[r] = true, --left;
    }
    if (left == 0 || (i == count - 1 && !how.read_last)) break;
    logits = read(ids.clamp_min(0));
  }
  return at::stack(drawn);
}

// A lone row's run through a network's step: -> [ids], logits (1, V), h[, c]
template <class Step>
static py::tuple run_plain(const Step& step, at::Tensor logits, at::Tensor h, c10::optional<at::Tensor> c,
                           int64_t count, double temperature, const c10::optional<at::Tensor>& suppress,
                           const py::object& generator_object, int64_t end_id, bool read_last, bool split) {
  const Drawing how{temperature, suppress, Source(generator_object), end_id, read_last};
  std::vector<int64_t> ids;
  {
    py::gil_scoped_release released;
    ids = draw_lone(how, logits, count, [&](int64_t id) {
      auto out = step.one(id, h, c, split);
      carry(out, h, c);
      return out[0].select(1, 0);
    });
  }
  return with_state(h, c, ids, logits);
}

// A batch's step on ids (B,) as the engine's per-token path makes it: -> logits (B, 1, V), h[, c]
static std::vector<at::Tensor> step_rows(const RnnStep& step, const at::Tensor& ids, const at::Tensor& h,
                                         const c10::optional<at::Tensor>& c, bool split) {
  return step(ids, h, c, false, split);
}

static std::vector<at::Tensor> step_rows(const MinGruStep& step, const at::Tensor& ids, const at::Tensor& h,
                                         const c10::optional<at::Tensor>&, bool) {
  return step(ids, h, false);
}

// A batch's run through a network's step: -> ids (count, B), logits (B, V), h[, c]
template <class Step>
static py::tuple run_rows(const Step& step, at::Tensor logits, at::Tensor h, c10::optional<at::Tensor> c,
                          int64_t count, double temperature, const c10::optional<at::Tensor>& suppress,
                          const py::object& generator_object, int64_t end_id, bool read_last, bool split) {
  const Drawing how{temperature, suppress, Source(generator_object), end_id, read_last};
  at::Tensor ids;
  {
    py::gil_scoped_release released;
    ids = draw_batch(how, logits, count, [&](const at::Tensor& now) {
      auto out = step_rows(step, now, h, c, split);
      carry(out, h, c);
      return out[0].select(1, 0);
    });
  }
  return with_state(h, c, ids, logits);
}

// A sequence ids (B, T) read token by token through `step` (ids (B,) -> logits (B, 1, V), the state
// carried inside it), as the models' `_stepped` loops read it: the logits (B, T, V), or with targets
// (B, T) the log-probability of each (B, T), computed per token by the same operations.
template <class Step>
static at::Tensor read_tokens(const at::Tensor& ids, const c10::optional<at::Tensor>& targets, Step&& step) {
  std::vector<at::Tensor> outs;
  for (int64_t t = 0; t < ids.size(1); ++t) {
    auto logits = step(ids.select(1, t));
    if (!targets.has_value()) {
      outs.push_back(logits);
      continue;
    }
    auto chosen = targets->select(1, t).unsqueeze(1);
    outs.push_back(at::log_softmax(logits.select(1, 0).to(at::kFloat), -1).gather(1, chosen));
  }
  return at::cat(outs, 1);
}

// RNNLanguageModel._stepped with the compiled step: -> (logits or log-probabilities, h[, c])
static py::tuple read_rnn(const RnnStep& step, const at::Tensor& ids, const c10::optional<at::Tensor>& targets,
                          at::Tensor h, c10::optional<at::Tensor> c, bool split) {
  at::Tensor out;
  {
    py::gil_scoped_release released;
    out = read_tokens(ids, targets, [&](const at::Tensor& now) {
      auto result = step(now, h, c, false, split);
      carry(result, h, c);
      return result[0];
    });
  }
  return with_state(h, c, out);
}

// MinGRULanguageModel._stepped with the compiled step: -> (logits, log-probabilities or features, h)
static py::tuple read_mingru(const MinGruStep& step, const at::Tensor& ids, const c10::optional<at::Tensor>& targets,
                             at::Tensor h, bool features) {
  at::Tensor out;
  {
    py::gil_scoped_release released;
    out = read_tokens(ids, targets, [&](const at::Tensor& now) {
      auto result = step(now, h, features);
      h = result[1];
      return result[0];
    });
  }
  return py::make_tuple(out, h);
}
