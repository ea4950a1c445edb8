// Plain draws, one row's (`plain_draw`, runs.h's `run_plain`) and a batch's (`draw_rows`, `run_rows`),
// as inference/sampler.py draws.
#pragma once

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/DistributionsHelper.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/div.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/index_fill.h>
#include <ATen/ops/isfinite.h>
#include <ATen/ops/rand.h>
#include <ATen/ops/softmax.h>
#include <ATen/ops/where.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>
#include <vector>

// The first largest logit of one row (1, V), as sampler.py's greedy rule picks it: -1 where no
// logit is finite (every token forbidden); a NaN counts as the largest, as torch.argmax has it.
static int64_t argmax_one(const at::Tensor& logits) {
  const int64_t chosen = logits.argmax(-1).item<int64_t>();
  if (std::isfinite(logits.select(0, 0)[chosen].item<float>())) return chosen;
  return at::isfinite(logits).any().item<bool>() ? chosen : -1;
}

// at::rand({1}, generator) read as a float, without a tensor: the number ATen's CPU uniform kernel
// draws, from the same generator state (elsewhere, that kernel).
static float uniform_one(at::Generator& generator) {
  if (!generator.device().is_cpu()) return at::rand({1}, generator, at::kFloat).item<float>();
  auto* cpu = at::check_generator<at::CPUGeneratorImpl>(generator);
  std::lock_guard<std::mutex> lock(cpu->mutex_);
  const float value = at::uniform_real_distribution<float>(0.0f, 1.0f)(cpu);
  return value == 1.0f ? 0.0f : value;  // as the kernel clamps a value rounded up to the bound
}

// Logits (B, V) as the sampler's plain path reads them: float32, suppressed ids at -inf.
static at::Tensor plain_logits(const at::Tensor& logits, const c10::optional<at::Tensor>& suppress) {
  auto out = logits.to(at::kFloat);
  return suppress.has_value() ? out.index_fill(-1, *suppress, -std::numeric_limits<double>::infinity()) : out;
}

// Logits (B, V) under plain settings (a temperature above 0 and suppressed ids) as the
// probabilities of sampler.py's `plain_cdf`: `plain_logits`, then the temperature.
static at::Tensor plain_probs(const at::Tensor& logits_in, double temperature,
                              const c10::optional<at::Tensor>& suppress) {
  auto logits = plain_logits(logits_in, suppress);
  if (temperature != 1.0) logits = logits / temperature;
  return at::softmax(logits, -1).contiguous();
}

// One row of probabilities `q` (V) drawn with `uniform` as sampler.py's `draw` of `plain_cdf` reads
// it: -1 where the row has no allowed token (a total of 0 or NaN). `cdf`: room for V numbers.
static int64_t draw_row(const float* q, int64_t vocab, double uniform, double* cdf) {
  // .double().cumsum(-1): widened exactly and summed in order, as ATen's cumsum sums a row
  double sum = 0.0;
  for (int64_t j = 0; j < vocab; ++j) cdf[j] = sum += static_cast<double>(q[j]);
  const double total = cdf[vocab - 1];
  if (!(total > 0)) return -1;
  const double target = uniform * total;
  // torch.searchsorted(right=True) on a non-decreasing row: the first entry above the target
  const int64_t chosen = std::upper_bound(cdf, cdf + vocab, target) - cdf;
  return std::min<int64_t>(chosen, vocab - 1);
}

// One row's next id under plain settings (a temperature and suppressed ids), chosen as
// inference/sampler.py's one-row path chooses it: the argmax at temperature 0 (no draw from the
// generator), else one draw; -1 where no token is allowed.
static int64_t draw_one(const at::Tensor& logits_in, double temperature, const c10::optional<at::Tensor>& suppress,
                        at::Generator generator) {
  if (temperature == 0) return argmax_one(plain_logits(logits_in, suppress));
  const float uniform = uniform_one(generator);
  auto probs = plain_probs(logits_in, temperature, suppress);
  std::vector<double> cdf(probs.size(-1));
  return draw_row(probs.data_ptr<float>(), probs.size(-1), uniform, cdf.data());
}

// Rows (B, V) under plain settings at a temperature above 0, each drawn with its number of
// `uniform` (B,) as sampler.py's `draw(plain_cdf(...))` draws them: the ids (B,), -1 for a row
// without an allowed token. A batch's draw in one call instead of some ten tensor operations.
static at::Tensor draw_rows(const at::Tensor& logits, double temperature, const c10::optional<at::Tensor>& suppress,
                            const at::Tensor& uniform) {
  auto probs = plain_probs(logits, temperature, suppress);
  auto numbers = uniform.to(at::kDouble).contiguous();  // as `draw` widens them
  const int64_t rows = probs.size(0), vocab = probs.size(1);
  TORCH_CHECK(numbers.numel() == rows, "one uniform number per row");
  auto ids = at::empty({rows}, at::kLong);
  std::vector<double> cdf(vocab);
  const float* q = probs.data_ptr<float>();
  const double* u = numbers.data_ptr<double>();
  int64_t* out = ids.data_ptr<int64_t>();
  for (int64_t r = 0; r < rows; ++r) out[r] = draw_row(q + r * vocab, vocab, u[r], cdf.data());
  return ids;
}

// Rows (B, V) under plain settings at temperature 0 as sampler.py's many-row greedy rule picks them
// (`greedy` of the suppressed float32 logits): each row's first largest logit, -1 for a row without a
// finite one. Nothing is drawn from a generator.
static at::Tensor greedy_rows(const at::Tensor& logits, const c10::optional<at::Tensor>& suppress) {
  auto plain = plain_logits(logits, suppress);
  return at::where(at::isfinite(plain).any(-1), plain.argmax(-1), -1);
}
