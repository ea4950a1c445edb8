// One row's plain draw (kernels.cpp's `plain_draw` and `run_plain` make it), as inference/sampler.py
// draws.
#pragma once

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/DistributionsHelper.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/div.h>
#include <ATen/ops/index_fill.h>
#include <ATen/ops/isfinite.h>
#include <ATen/ops/rand.h>
#include <ATen/ops/softmax.h>

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

// One row's next id under plain settings (a temperature and suppressed ids), chosen as
// inference/sampler.py's one-row path chooses it: the argmax at temperature 0 (no draw from the
// generator), else one draw; -1 where no token is allowed.
static int64_t draw_one(const at::Tensor& logits_in, double temperature, const c10::optional<at::Tensor>& suppress,
                        at::Generator generator) {
  auto logits = logits_in.to(at::kFloat);
  if (suppress.has_value()) logits = logits.index_fill(-1, *suppress, -std::numeric_limits<double>::infinity());
  if (temperature == 0) return argmax_one(logits);
  const float uniform = uniform_one(generator);
  if (temperature != 1.0) logits = logits / temperature;
  auto probs = at::softmax(logits.to(at::kFloat), -1).contiguous();
  const float* q = probs.data_ptr<float>();
  const int64_t vocab = probs.size(-1);
  // .to(double).cumsum(-1): widened exactly and summed in order, as ATen's cumsum sums a row
  std::vector<double> cdf(vocab);
  double sum = 0.0;
  for (int64_t j = 0; j < vocab; ++j) cdf[j] = sum += static_cast<double>(q[j]);
  const double total = cdf[vocab - 1];
  if (!(total > 0)) return -1;
  const double target = static_cast<double>(uniform) * total;
  // torch.searchsorted(right=True) on a non-decreasing row: the first entry above the target
  const int64_t chosen = std::upper_bound(cdf.begin(), cdf.end(), target) - cdf.begin();
  return std::min<int64_t>(chosen, vocab - 1);
}

