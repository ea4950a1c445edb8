// A Kneser-Ney chain's rows for generation (models/chainsteps.py: `StepRows`, its `_row` and `_level`):
// each context's distribution by the same recursion in double precision, one level per order read
// from the context's successors alone, then its log through ATen's log as the Python path takes it and
// float32. Sums, products and quotients are single IEEE operations here as in numpy (no contraction:
// -ffp-contract=off), so every row is the Python path's bit for bit (tests/native/test_chain.py).
// Generated text meets a new order-8 context most tokens, and the row in numpy cost more than the
// network's step; here it is a few binary searches and a loop over the successors.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/log.h>
#include <torch/csrc/utils/pybind.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace py = pybind11;

// One order's table as `MarkovModel._prepare` builds it: the sorted context keys, where each
// context's successors start among the sorted n-gram keys, their counts, the discounts D1..D3+, and
// each context's total and back-off weight.
struct ChainLevel {
  at::Tensor ctx, start, keys, counts, d, total, gamma;

  explicit ChainLevel(const py::dict& table)
      : ctx(table["ctx"].cast<at::Tensor>().contiguous()),
        start(table["start"].cast<at::Tensor>().contiguous()),
        keys(table["keys"].cast<at::Tensor>().contiguous()),
        counts(table["counts"].cast<at::Tensor>().contiguous()),
        d(table["d"].cast<at::Tensor>().contiguous()),
        total(table["total"].cast<at::Tensor>().contiguous()),
        gamma(table["gamma"].cast<at::Tensor>().contiguous()) {}
};

class ChainRows {
 public:
  // levels: orders 1..order's tables (dicts of tensors); unigram: P(.) of the lowest order (V,) double;
  // limit: the bytes each kept map may hold before it is emptied (chainsteps.py's STEP_CACHE_BYTES).
  ChainRows(const py::list& levels, const at::Tensor& unigram, int64_t limit) : limit_(limit) {
    for (const auto& table : levels) levels_.emplace_back(table.cast<py::dict>());
    auto p = unigram.contiguous();
    unigram_.assign(p.data_ptr<double>(), p.data_ptr<double>() + p.numel());
  }

  // contexts (B, order-1) int64, -1 where there is no token yet -> log P(. | context) (B, V) float32
  at::Tensor operator()(const at::Tensor& contexts_in) {
    auto contexts = contexts_in.contiguous();
    return rows(contexts.data_ptr<int64_t>(), contexts.size(0), contexts.size(1));
  }

  // `rows` contexts of `tail` ids each, one after the other -> (rows, V)
  at::Tensor rows(const int64_t* contexts, int64_t rows, int64_t tail) {
    std::lock_guard<std::mutex> lock(mutex_);  // the kept rows are shared by every caller of this chain
    const int64_t vocab = unigram_.size();
    auto out = at::empty({rows, vocab}, at::kFloat);
    for (int64_t r = 0; r < rows; ++r) {
      std::memcpy(out.data_ptr<float>() + r * vocab, logs(contexts + r * tail, tail).data(), vocab * sizeof(float));
    }
    return out;
  }

 private:
  std::vector<ChainLevel> levels_;
  std::vector<double> unigram_;
  int64_t limit_;
  std::unordered_map<std::string, std::vector<float>> logs_;      // a context -> its row's logs (`StepRows.logs`)
  std::unordered_map<std::string, std::vector<double>> suffixes_;  // a suffix -> its level's row (`StepRows.suffixes`)
  std::mutex mutex_;

  static std::string key_of(const int64_t* ids, int64_t length) {
    return std::string(reinterpret_cast<const char*>(ids), length * sizeof(int64_t));
  }

  const std::vector<float>& logs(const int64_t* context, int64_t tail) {
    auto key = key_of(context, tail);
    auto found = logs_.find(key);
    if (found != logs_.end()) return found->second;
    const int64_t vocab = unigram_.size();
    if (static_cast<int64_t>(logs_.size() + 1) * vocab * 4 > limit_) logs_.clear();
    auto row = this->row(context, tail);  // a copy: the log below must not see the kept row change
    auto logged = at::log(at::from_blob(row.data(), {vocab}, at::kDouble)).to(at::kFloat);
    const float* values = logged.data_ptr<float>();
    return logs_.emplace(std::move(key), std::vector<float>(values, values + vocab)).first->second;
  }

  // `_row`: from the longest suffix kept, each higher order's level in turn, each kept by its suffix
  std::vector<double> row(const int64_t* context, int64_t tail) {
    const int64_t order = tail + 1, vocab = unigram_.size();
    if (static_cast<int64_t>(suffixes_.size()) * vocab * 8 > limit_) suffixes_.clear();
    int64_t first = 2;
    const std::vector<double>* p = &unigram_;
    for (int64_t n = order; n > 1; --n) {
      auto kept = suffixes_.find(key_of(context + tail - (n - 1), n - 1));
      if (kept != suffixes_.end()) {
        first = n + 1, p = &kept->second;
        break;
      }
    }
    std::vector<double> current = *p;
    for (int64_t n = first; n <= order; ++n) {
      current = level(n, context + tail - (n - 1), current);
      suffixes_[key_of(context + tail - (n - 1), n - 1)] = current;
    }
    return current;
  }

  // `_level`: P(. | ctx) at order n from the row of order n-1, where the table holds ctx
  std::vector<double> level(int64_t n, const int64_t* ctx, const std::vector<double>& lower) const {
    const ChainLevel& table = levels_[n - 1];
    const int64_t contexts = table.ctx.numel(), vocab = unigram_.size();
    int64_t key = 0;
    for (int64_t j = 0; j < n - 1; ++j) {
      if (ctx[j] < 0) return lower;
      key = key * vocab + ctx[j];
    }
    const int64_t* known = table.ctx.data_ptr<int64_t>();
    const int64_t pos = std::lower_bound(known, known + contexts, key) - known;
    if (pos == contexts || known[pos] != key) return lower;
    const double gamma = table.gamma.data_ptr<double>()[pos], total = table.total.data_ptr<double>()[pos];
    const double* d = table.d.data_ptr<double>();
    std::vector<double> p(vocab);
    for (int64_t w = 0; w < vocab; ++w) p[w] = gamma * lower[w];
    const int64_t a = table.start.data_ptr<int64_t>()[pos], b = table.start.data_ptr<int64_t>()[pos + 1];
    for (int64_t i = a; i < b; ++i) {
      const double count = table.counts.data_ptr<double>()[i];
      const double discounted = std::max(count - d[static_cast<int64_t>(std::clamp(count, 1.0, 3.0)) - 1], 0.0);
      const int64_t successor = table.keys.data_ptr<int64_t>()[i] % vocab;
      p[successor] = discounted / total + gamma * lower[successor];
    }
    return p;
  }
};
