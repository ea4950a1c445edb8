// A lone row's int8 product made here rather than by fbgemm, with fbgemm's numbers: with AVX-512 VNNI
// (`vpdpbusd`) or with AVX2 (`vpmaddubsw` pairs summed by `vpmaddwd`).
//
// fbgemm's dynamic int8 product is built for many rows: for one row it chooses the activations'
// range, quantizes and packs the row, and runs a kernel whose per-call work costs more than its
// arithmetic where the weights sit in the core's L2, and for a row scaled by its largest value on
// any L2, whose ATen calls around fbgemm's go too (hardware.direct_int8 says where). The inputs
// here are bounded (a recurrent state, or a row divided by its largest magnitude) and the anchor
// row pins their range to [-1, 1], so the scale and zero point are known when the weights load, and
// one multiply-add instruction per 4 inputs of 16 (or 8) outputs does the rest. Every number is
// fbgemm's (on AVX-512 and under an AVX2 cap alike): the same quantization (a fused multiply-add by
// 1/scale plus the zero point, rounded to nearest even, clamped to [0, 255]), exact int32 sums, and
// the same fused multiply-add of the sum by the two scales plus the bias
// (tests/native/test_direct.py compares them bit for bit, ties included). The sums are exact on AVX2
// too: `reduce_range` puts an in-range activation at 127 or below, so a pair's int16 sum stays under
// 2 x 127 x 128 < 32,767 and `vpmaddubsw` never saturates.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <vector>

#include "helper.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define DIRECT_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,fma")))
#define DIRECT_AVX2 __attribute__((target("avx2,fma")))
#endif

// models/weights.py's `Int8Matmul._direct()`: the weights in blocks of 64 outputs, each block as K/4
// groups of (64 outputs x 4 inputs), so a group is four 64-byte loads for four vpdpbusd.
struct Direct {
  at::Tensor weights;  // int8, (N / 64, K / 4, 64, 4)
  at::Tensor colsum;   // int32 (N): each output's weight sum, for the zero point
  at::Tensor mult;     // float (N): the activations' scale times each output's weight scale
  at::Tensor bias;     // float (N)
  float inverse = 0.0f, zero = 0.0f;  // the activations' 1 / scale and zero point
  int64_t width = 0, outputs = 0;
  bool wide = true;  // AVX-512 VNNI's kernels, else AVX2's (Int8Matmul._direct says which this CPU may use)

  bool defined() const { return weights.defined(); }

  // The rows of `parts` side by side, quantized into `q`; false where a value lies outside [-1, 1]
  // (or is NaN): then fbgemm, whose range would not be the anchor's, makes the product.
  bool quantize(std::initializer_list<at::Tensor> parts, std::vector<uint8_t>& q) const {
    const int64_t rows = parts.begin()->size(0);
    q.resize(rows * width);
    int64_t offset = 0;
    for (const auto& part : parts) {
      if (!part.is_contiguous() || part.scalar_type() != at::kFloat || part.size(0) != rows) return false;
      const int64_t w = part.size(1);
      if (offset + w > width) return false;
      for (int64_t r = 0; r < rows; ++r) {
        if (!quantize_row(part.data_ptr<float>() + r * w, w, q.data() + r * width + offset)) return false;
      }
      offset += w;
    }
    return offset == width;
  }

#if defined(__x86_64__)
  bool quantize_row(const float* in, int64_t w, uint8_t* q) const {
    return wide ? quantize_row512(in, w, q) : quantize_row256(in, w, q);
  }

  DIRECT_TARGET bool quantize_row512(const float* in, int64_t w, uint8_t* q) const {
    const __m512 scale = _mm512_set1_ps(inverse), zero_point = _mm512_set1_ps(zero), one = _mm512_set1_ps(1.0f);
    int64_t k = 0;
    for (; k + 16 <= w; k += 16) {
      const __m512 x = _mm512_loadu_ps(in + k);
      if (_mm512_cmp_ps_mask(_mm512_abs_ps(x), one, _CMP_LE_OQ) != 0xFFFF) return false;
      __m512i r = _mm512_cvtps_epi32(_mm512_fmadd_ps(x, scale, zero_point));  // to nearest, ties to even
      r = _mm512_max_epi32(_mm512_min_epi32(r, _mm512_set1_epi32(255)), _mm512_setzero_si512());
      _mm_storeu_si128(reinterpret_cast<__m128i*>(q + k), _mm512_cvtepi32_epi8(r));
    }
    return quantize_tail(in, k, w, q);
  }

  bool quantize_tail(const float* in, int64_t k, int64_t w, uint8_t* q) const {
    for (; k < w; ++k) {
      if (!(std::fabs(in[k]) <= 1.0f)) return false;
      const float t = std::nearbyint(std::fma(in[k], inverse, zero));
      q[k] = static_cast<uint8_t>(t < 0.0f ? 0.0f : (t > 255.0f ? 255.0f : t));
    }
    return true;
  }

  DIRECT_AVX2 bool quantize_row256(const float* in, int64_t w, uint8_t* q) const {
    const __m256 scale = _mm256_set1_ps(inverse), zero_point = _mm256_set1_ps(zero), one = _mm256_set1_ps(1.0f);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    int64_t k = 0;
    for (; k + 8 <= w; k += 8) {
      const __m256 x = _mm256_loadu_ps(in + k);
      if (_mm256_movemask_ps(_mm256_cmp_ps(_mm256_andnot_ps(sign, x), one, _CMP_LE_OQ)) != 0xFF) return false;
      __m256i r = _mm256_cvtps_epi32(_mm256_fmadd_ps(x, scale, zero_point));  // to nearest, ties to even
      r = _mm256_max_epi32(_mm256_min_epi32(r, _mm256_set1_epi32(255)), _mm256_setzero_si256());
      const __m128i words = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
      _mm_storel_epi64(reinterpret_cast<__m128i*>(q + k), _mm_packus_epi16(words, words));
    }
    return quantize_tail(in, k, w, q);
  }

  // Outputs [from, to) (multiples of 64) of every row: out[r] = sum * mult + bias (one rounding),
  // then + plus[r] where given.
  void blocks(const uint8_t* q, int64_t rows, int64_t from, int64_t to, float* out, const float* plus) const {
    for (int64_t r = 0; r < rows; ++r) {
      float* o = out + r * outputs;
      const float* p = plus == nullptr ? nullptr : plus + r * outputs;
      wide ? lone512(q + r * width, from, to, o, p) : lone256(q + r * width, from, to, o, p);
    }
  }

  // One row: two sets of accumulators, even and odd groups of 4 inputs, so that eight independent
  // chains of vpdpbusd keep the core busy where four would wait on each other's latency.
  DIRECT_TARGET void lone512(const uint8_t* row, int64_t from, int64_t to, float* out, const float* plus) const {
    for (int64_t n = from; n < to; n += 64) {
      const int8_t* block = weights.data_ptr<int8_t>() + n * width;
      __m512i acc[2][4];
      for (auto& set : acc) {
        for (auto& a : set) a = _mm512_setzero_si512();
      }
      int64_t k = 0;
      for (; k + 8 <= width; k += 8, block += 512) {
        for (int p = 0; p < 2; ++p) {
          const __m512i x = _mm512_set1_epi32(*reinterpret_cast<const int32_t*>(row + k + 4 * p));
          for (int j = 0; j < 4; ++j) {
            acc[p][j] = _mm512_dpbusd_epi32(acc[p][j], x, _mm512_loadu_si512(block + 256 * p + 64 * j));
          }
        }
      }
      if (k < width) {
        const __m512i x = _mm512_set1_epi32(*reinterpret_cast<const int32_t*>(row + k));
        for (int j = 0; j < 4; ++j) acc[0][j] = _mm512_dpbusd_epi32(acc[0][j], x, _mm512_loadu_si512(block + 64 * j));
      }
      for (int j = 0; j < 4; ++j) store512(_mm512_add_epi32(acc[0][j], acc[1][j]), n + 16 * j, out, plus);
    }
  }

  // One row on AVX2: per 4 inputs, `vpmaddubsw` makes each output's two pair sums (int16, exact:
  // see above) and `vpmaddwd` by ones adds them into int32; eight accumulators of 8 outputs a block.
  DIRECT_AVX2 void lone256(const uint8_t* row, int64_t from, int64_t to, float* out, const float* plus) const {
    const __m256i ones = _mm256_set1_epi16(1);
    for (int64_t n = from; n < to; n += 64) {
      const int8_t* block = weights.data_ptr<int8_t>() + n * width;
      __m256i acc[8];
      for (auto& a : acc) a = _mm256_setzero_si256();
      for (int64_t k = 0; k < width; k += 4, block += 256) {
        const __m256i x = _mm256_set1_epi32(*reinterpret_cast<const int32_t*>(row + k));
        for (int j = 0; j < 8; ++j) {
          const auto* w = reinterpret_cast<const __m256i*>(block + 32 * j);
          const __m256i pairs = _mm256_maddubs_epi16(x, _mm256_loadu_si256(w));
          acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(pairs, ones));
        }
      }
      for (int j = 0; j < 8; ++j) store256(acc[j], n + 8 * j, out, plus);
    }
  }

  // 16 outputs from their sums: (sum - zero point x weight sum) x mult + bias, then + plus
  DIRECT_TARGET void store512(__m512i sum, int64_t at, float* out, const float* plus) const {
    const __m512i zero_point = _mm512_set1_epi32(static_cast<int32_t>(zero));
    const __m512i sums = _mm512_loadu_si512(colsum.data_ptr<int32_t>() + at);
    const __m512i raw = _mm512_sub_epi32(sum, _mm512_mullo_epi32(zero_point, sums));
    __m512 y = _mm512_fmadd_ps(_mm512_cvtepi32_ps(raw), _mm512_loadu_ps(mult.data_ptr<float>() + at),
                               _mm512_loadu_ps(bias.data_ptr<float>() + at));
    if (plus != nullptr) y = _mm512_add_ps(_mm512_loadu_ps(plus + at), y);
    _mm512_storeu_ps(out + at, y);
  }

  DIRECT_AVX2 void store256(__m256i sum, int64_t at, float* out, const float* plus) const {
    const __m256i zero_point = _mm256_set1_epi32(static_cast<int32_t>(zero));
    const __m256i sums = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(colsum.data_ptr<int32_t>() + at));
    const __m256i raw = _mm256_sub_epi32(sum, _mm256_mullo_epi32(zero_point, sums));
    __m256 y = _mm256_fmadd_ps(_mm256_cvtepi32_ps(raw), _mm256_loadu_ps(mult.data_ptr<float>() + at),
                               _mm256_loadu_ps(bias.data_ptr<float>() + at));
    if (plus != nullptr) y = _mm256_add_ps(_mm256_loadu_ps(plus + at), y);
    _mm256_storeu_ps(out + at, y);
  }
  // A scaled product's rows taken back (Int8Matmul.__call__ without `bounded`): y = bias + y x the
  // row's scale as at::addcmul makes it (one fused multiply-add), then + plus[r] where given.
  void scale_back(float* y, int64_t rows, const float* scales, const float* bias, const float* plus) const {
    wide ? scale_back512(y, rows, scales, bias, plus) : scale_back256(y, rows, scales, bias, plus);
  }

  // The same numbers as the AVX-512 loop (a fused multiply-add rounds once either way), left to the
  // compiler to vectorise.
  DIRECT_AVX2 void scale_back256(float* y, int64_t rows, const float* scales, const float* bias,
                                 const float* plus) const {
    for (int64_t r = 0; r < rows; ++r) {
      float* row = y + r * outputs;
      for (int64_t j = 0; j < outputs; ++j) row[j] = std::fma(row[j], scales[r], bias[j]);
      if (plus == nullptr) continue;
      for (int64_t j = 0; j < outputs; ++j) row[j] = plus[r * outputs + j] + row[j];
    }
  }

  DIRECT_TARGET void scale_back512(float* y, int64_t rows, const float* scales, const float* bias,
                                   const float* plus) const {
    for (int64_t r = 0; r < rows; ++r) {
      const __m512 scale = _mm512_set1_ps(scales[r]);
      for (int64_t j = 0; j < outputs; j += 16) {
        float* at = y + r * outputs + j;
        __m512 v = _mm512_fmadd_ps(_mm512_loadu_ps(at), scale, _mm512_loadu_ps(bias + j));
        if (plus != nullptr) v = _mm512_add_ps(_mm512_loadu_ps(plus + r * outputs + j), v);
        _mm512_storeu_ps(at, v);
      }
    }
  }
#else
  void scale_back(float*, int64_t, const float*, const float*, const float*) const {}
  bool quantize_row(const float*, int64_t, uint8_t*) const { return false; }
  void blocks(const uint8_t*, int64_t, int64_t, int64_t, float*, const float*) const {}
#endif

  // The product of `parts` side by side (+ `plus`), on two cores where `helper` is given (the caller
  // gives it where the product is wide enough to split: where it has fbgemm halves); an undefined
  // tensor where the inputs are out of range.
  at::Tensor operator()(std::initializer_list<at::Tensor> parts, Helper* helper, const at::Tensor& plus) const {
    thread_local std::vector<uint8_t> q;
    const int64_t rows = parts.begin()->size(0);
    const bool adding = plus.defined();
    if (adding && !(plus.is_contiguous() && plus.scalar_type() == at::kFloat && plus.size(0) == rows)) {
      return at::Tensor();
    }
    if (!quantize(parts, q)) return at::Tensor();
    auto out = at::empty({rows, outputs}, parts.begin()->options());
    float* o = out.data_ptr<float>();
    const float* p = adding ? plus.data_ptr<float>() : nullptr;
    const int64_t cut = outputs / 2 / 64 * 64;  // as Int8Matmul._halves
    const uint8_t* data = q.data();  // named here: in the helper's thread `q` would be its own
    if (helper == nullptr || cut == 0) {
      blocks(data, rows, 0, outputs, o, p);
    } else {
      helper->both([&] { blocks(data, rows, 0, cut, o, p); }, [&] { blocks(data, rows, cut, outputs, o, p); });
    }
    return out;
  }
};

// Whether this CPU runs `Direct::blocks` with AVX-512 VNNI (`wide`) or AVX2 (the Python side chooses
// which, and leaves the wide one out under an ISA cap).
static inline bool direct_supported(bool wide) {
#if defined(__x86_64__)
  if (!wide) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vnni");
#else
  return false;
#endif
}
