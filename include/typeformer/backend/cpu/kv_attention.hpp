// typeformer/backend/cpu/kv_attention.hpp
//
// WHAT THIS REPRESENTS
//   The cpu kernels of cached_attention over a quantized KV cache (kv_type f16, q8_0, int8; the
//   layouts are in backend/reference/decoder.hpp, the cache in infer/kv_store.hpp). The entry
//   point, cached_attention(cpu, g, q, kv_layer_view, o, scratch), is in backend/cpu/decoder.hpp;
//   f32 caches keep the float kernels there.
//
//   dequantize_kv_row  one cached row to D floats, bitwise as the reference dequantizes it
//                      (f16: F16C; q8_0: float(q) * float(d) per block of 32, as gguf-py; int8:
//                      float(q) * scale), with SIMD int8 -> float widening.
//   kv_decode          one query row per head (T == 1). Per kv head: every cached key row is
//                      dequantized once into an L1 row of D floats and dotted with the H / G query
//                      heads that share it (GQA reads each row once, not H / G times); softmax
//                      with the SIMD exp of the flash kernel; the value rows likewise, each
//                      accumulated into the H / G outputs. Kv heads in parallel (fixed order per
//                      head: thread-count independent); scratch from the caller, no allocation.
//   kv_dequantize_prefix  the filled prefix (G, n, D) of keys and values as floats, for prefill:
//                      the caller then runs the flash kernel (attention.hpp) on that copy. One
//                      layer's prefix is 1 / n_layer of an f32 cache; dequantizing it costs O(n D)
//                      against the O(T n D) of the attention (measured in bench/infer/RESULTS.md).
//
//   Dots run on the dequantized floats (not on int8 q against int8 k): the reference's result
//   up to float summation order, and no rounding of q to 8 bits (llama.cpp's CPU path quantizes
//   q to the cache's vec_dot_type). An integer-dot variant was not built or measured; at 1024
//   cached positions this kernel is bound by its per-row dots and softmax, not by the cache reads
//   (bench/infer/RESULTS.md R5).
#pragma once

#include "typeformer/backend/cpu/attention.hpp"
#include "typeformer/backend/cpu/half_simd.hpp"
#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/backend/cpu/simd.hpp"
#include "typeformer/backend/reference/decoder.hpp"
#include "typeformer/quant/blocks.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <immintrin.h>
#endif

TFM_BEGIN_NAMESPACE
namespace cpu_kernels {
namespace kv_detail {

/// batch<float, Arch>::size int8 values from p (no alignment needed), widened exactly to float.
template <class Arch = xsimd::default_arch>
inline xsimd::batch<float, Arch> load_i8_as_float(const std::int8_t* p) noexcept {
  using B = xsimd::batch<float, Arch>;
  using R [[maybe_unused]] = typename B::register_type;
#if defined(__AVX512F__)
  if constexpr (sizeof(R) == 64)
    return B(_mm512_cvtepi32_ps(
        _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)))));
#endif
#if defined(__AVX2__)
  if constexpr (sizeof(R) == 32)
    return B(_mm256_cvtepi32_ps(
        _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)))));
#endif
  alignas(64) float tmp[B::size];
  for (std::size_t i = 0; i < B::size; ++i) tmp[i] = static_cast<float>(p[i]);
  return B::load_aligned(tmp);
}

/// out[0, n) = float(q[i]) * s.
inline void scale_i8(const std::int8_t* q, float s, index_t n, float* out) noexcept {
  constexpr index_t w = simd::width<float>;
  const simd::batch<float> sv(s);
  index_t i = 0;
  for (; i + w <= n; i += w) simd::store(out + i, load_i8_as_float(q + i) * sv);
  for (; i < n; ++i) out[i] = static_cast<float>(q[i]) * s;
}

}  // namespace kv_detail

/// Row `row` of a (G * capacity)-row key or value array of type t, as D floats in out. f32 rows
/// are copied (the kernels below read them in place instead).
inline void dequantize_kv_row(kv_type t, const std::byte* base, const float* scales, index_t row,
                              index_t D, float* out) noexcept {
  const std::byte* p = base + static_cast<std::size_t>(row) * kv_row_bytes(t, D);
  switch (t) {
    case kv_type::f32:
      std::memcpy(out, p, static_cast<std::size_t>(D) * sizeof(float));
      return;
    case kv_type::f16:
      convert(reinterpret_cast<const f16*>(p), out, D);
      return;
    case kv_type::q8_0: {
      // whole blocks of 32 (a multiple of the SIMD width): no tail loop for GCC to misjudge
      constexpr index_t w = simd::width<float>;
      static_assert(32 % w == 0, "tfm: a Q8_0 block must hold whole SIMD batches of floats");
      const auto* b = reinterpret_cast<const block_q8_0*>(p);
      for (index_t i = 0; i < D / 32; ++i) {
        const simd::batch<float> sv(static_cast<float>(b[i].d));
        for (index_t j = 0; j < 32; j += w)
          simd::store(out + 32 * i + j, kv_detail::load_i8_as_float(b[i].qs + j) * sv);
      }
      return;
    }
    case kv_type::int8:
      kv_detail::scale_i8(reinterpret_cast<const std::int8_t*>(p), scales[row], D, out);
      return;
  }
}

/// Decode attention (g.T == 1) over a cache of kv.type (see the file comment). scratch: at least
/// g.H * g.capacity + g.G * g.D floats; s rows of head h at scratch + h * capacity, the row
/// buffers of kv head gk at scratch + row_at + gk * D (row_at >= H * capacity).
inline void kv_decode(const cached_attention_geometry& g, const float* q, const kv_layer_view& kv,
                      float* o, float* scratch, index_t row_at) {
  using V = simd::batch<float>;
  constexpr index_t w = simd::width<float>;
  const index_t rep = g.H / g.G, n = g.pos0 + 1, D = g.D, dv = D / w * w;
  const float scale = static_cast<float>(g.scale);
  TFM_OMP(parallel for schedule(static) if (n * g.H * D >= (1 << 15) && g.G > 1 &&
                                             num_threads() > 1 && !in_parallel()))
  for (index_t gk = 0; gk < g.G; ++gk) {
    float* row = scratch + row_at + gk * D;
    const index_t h0 = gk * rep;
    // s[h][j] = scale q_h . k_j
    for (index_t j = 0; j < n; ++j) {
      const index_t r = gk * g.capacity + j;
      const float* kr = row;
      if (kv.type == kv_type::f32)
        kr = reinterpret_cast<const float*>(kv.k) + r * D;
      else
        dequantize_kv_row(kv.type, kv.k, kv.k_scale, r, D, row);
      for (index_t h = h0; h < h0 + rep; ++h) {
        const float* qr = q + h * D;
        V acc(0.0f);
        for (index_t d = 0; d < dv; d += w)
          acc = simd::fma(simd::load(qr + d), simd::load(kr + d), acc);
        float dot = simd::reduce_add(acc);
        for (index_t d = dv; d < D; ++d) dot = std::fma(qr[d], kr[d], dot);
        scratch[h * g.capacity + j] = dot * scale;
      }
    }
    // p = softmax(s) (in place), o_h = 0
    for (index_t h = h0; h < h0 + rep; ++h) {
      float* s = scratch + h * g.capacity;
      float mx = -std::numeric_limits<float>::infinity();
      for (index_t j = 0; j < n; ++j) mx = std::max(mx, s[j]);
      const float inv = 1.0f / attention_detail::exp_shift_sum(s, n, mx);
      for (index_t j = 0; j < n; ++j) s[j] *= inv;
      for (index_t d = 0; d < D; ++d) o[h * D + d] = 0.0f;
    }
    // o_h += p_h[j] v_j
    for (index_t j = 0; j < n; ++j) {
      const index_t r = gk * g.capacity + j;
      const float* vr = row;
      if (kv.type == kv_type::f32)
        vr = reinterpret_cast<const float*>(kv.v) + r * D;
      else
        dequantize_kv_row(kv.type, kv.v, kv.v_scale, r, D, row);
      for (index_t h = h0; h < h0 + rep; ++h) {
        const float p = scratch[h * g.capacity + j];
        float* orow = o + h * D;
        const V pv(p);
        for (index_t d = 0; d < dv; d += w)
          simd::store(orow + d, simd::fma(pv, simd::load(vr + d), simd::load(orow + d)));
        for (index_t d = dv; d < D; ++d) orow[d] = std::fma(p, vr[d], orow[d]);
      }
    }
  }
}

/// The first n positions of every kv head as floats: keys to kf, values to vf, each (G, n, D).
inline void kv_dequantize_prefix(const cached_attention_geometry& g, const kv_layer_view& kv,
                                 index_t n, float* kf, float* vf) {
  const index_t rows = g.G * n;
  TFM_OMP(parallel for schedule(static) if (rows * g.D >= (1 << 16) && num_threads() > 1 &&
                                             !in_parallel()))
  for (index_t i = 0; i < rows; ++i) {
    const index_t gk = i / n, j = i % n, r = gk * g.capacity + j;
    dequantize_kv_row(kv.type, kv.k, kv.k_scale, r, g.D, kf + i * g.D);
    dequantize_kv_row(kv.type, kv.v, kv.v_scale, r, g.D, vf + i * g.D);
  }
}

}  // namespace cpu_kernels
TFM_END_NAMESPACE
