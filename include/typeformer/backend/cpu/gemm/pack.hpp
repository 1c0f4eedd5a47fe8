// typeformer/backend/cpu/gemm/pack.hpp
//
// WHAT THIS REPRESENTS
//   Packing of GEMM operands into the panel layouts the micro-kernel reads, and the per-thread
//   aligned scratch buffers that hold them (allocated once per thread and reused).
//
//   pack_a: rows [0, mc) x depth [0, kc) of op(A) -> panels of MR rows; panel p holds, for each
//           k, the MR values op(A)(p*MR + r, k); rows past mc are zero.
//   pack_b: depth [0, kc) x columns [0, nc) of op(B) -> panels of NR columns; panel q holds, for
//           each k, the NR values op(B)(k, q*NR + j); columns past nc are zero.
//   Source pointers point at element (0, 0) of the block; element (i, k) of op(A) is
//   a[i*lda + k] (trans == false) or a[k*lda + i] (trans == true), likewise for B.
#pragma once

#include "typeformer/backend/cpu/simd.hpp"
#include "typeformer/core/index.hpp"

#include <algorithm>
#include <cstddef>
#include <new>
#include <type_traits>

TFM_BEGIN_NAMESPACE

namespace cpu_kernels {
namespace detail {

/// Growable 64-byte aligned scratch; grows only, never shrinks, freed with its thread.
class gemm_scratch {
 public:
  gemm_scratch() = default;
  gemm_scratch(const gemm_scratch&) = delete;
  gemm_scratch& operator=(const gemm_scratch&) = delete;
  ~gemm_scratch() { release(); }

  void* get(std::size_t bytes) {
    if (bytes > capacity_) {
      release();
      data_ = ::operator new (bytes, std::align_val_t{64});
      capacity_ = bytes;
    }
    return data_;
  }

 private:
  void release() noexcept {
    if (data_) ::operator delete (data_, std::align_val_t{64});
    data_ = nullptr;
    capacity_ = 0;
  }
  void* data_ = nullptr;
  std::size_t capacity_ = 0;
};

/// The calling thread's scratch slot `which` (0: A block, 1: B block, 2: gemv/small temporaries,
/// 3: the two blocks a thread team packs together, owned by the thread that starts the team).
template <class T>
T* gemm_thread_buffer(int which, index_t count) {
  thread_local gemm_scratch slots[4];
  return static_cast<T*>(slots[which].get(static_cast<std::size_t>(count) * sizeof(T)));
}

#if defined(__AVX512F__) && (defined(__GNUC__) || defined(__clang__))
#define TFM_GEMM_TRANSPOSE_16X16 1
/// dst[c*ldd + r] = src[r*lds + c] for r < Rows, c < 16: the unpack / shuffle /
/// 128-bit-lane-shuffle transpose, written with __builtin_shufflevector (the <immintrin.h> forms
/// trip GCC 12's -Wuninitialized false positive on _mm512_undefined_ps). Rows < 16 (pack_a's
/// 12-row panels) reads only those rows and writes Rows values per destination row.
template <int Rows = 16>
inline void transpose_avx512_f32_16x16(const float* src, index_t lds, float* dst, index_t ldd) {
  static_assert(Rows >= 1 && Rows <= 16);
  typedef float v16 __attribute__((vector_size(64), aligned(4)));
  v16 r[16], t[16];
  for (int i = 0; i < 16; ++i) {
    if (i < Rows)
      __builtin_memcpy(&r[i], src + i * lds, sizeof(v16));
    else
      r[i] = v16{};
  }
  for (int i = 0; i < 16; i += 2) {  // unpacklo / unpackhi
    t[i] = __builtin_shufflevector(r[i], r[i + 1], 0, 16, 1, 17, 4, 20, 5, 21, 8, 24, 9, 25, 12, 28,
                                   13, 29);
    t[i + 1] = __builtin_shufflevector(r[i], r[i + 1], 2, 18, 3, 19, 6, 22, 7, 23, 10, 26, 11, 27,
                                       14, 30, 15, 31);
  }
  for (int i = 0; i < 16; i += 4) {  // shuffle_ps 0x44 / 0xEE
    r[i] = __builtin_shufflevector(t[i], t[i + 2], 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13,
                                   28, 29);
    r[i + 1] = __builtin_shufflevector(t[i], t[i + 2], 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27,
                                       14, 15, 30, 31);
    r[i + 2] = __builtin_shufflevector(t[i + 1], t[i + 3], 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25,
                                       12, 13, 28, 29);
    r[i + 3] = __builtin_shufflevector(t[i + 1], t[i + 3], 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26,
                                       27, 14, 15, 30, 31);
  }
  // shuffle_f32x4 0x88 (lanes x0 x2 y0 y2) / 0xDD (lanes x1 x3 y1 y3)
#define TFM_LANES_88(x, y) \
  __builtin_shufflevector(x, y, 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27)
#define TFM_LANES_DD(x, y) \
  __builtin_shufflevector(x, y, 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31)
  for (int i = 0; i < 4; ++i) {
    t[i] = TFM_LANES_88(r[i], r[i + 4]);
    t[i + 4] = TFM_LANES_DD(r[i], r[i + 4]);
    t[i + 8] = TFM_LANES_88(r[i + 8], r[i + 12]);
    t[i + 12] = TFM_LANES_DD(r[i + 8], r[i + 12]);
  }
  for (int i = 0; i < 8; ++i) {
    const v16 lo = TFM_LANES_88(t[i], t[i + 8]), hi = TFM_LANES_DD(t[i], t[i + 8]);
    __builtin_memcpy(dst + i * ldd, &lo, Rows * sizeof(float));
    __builtin_memcpy(dst + (i + 8) * ldd, &hi, Rows * sizeof(float));
  }
#undef TFM_LANES_88
#undef TFM_LANES_DD
}
#endif

#if defined(__AVX2__) && !defined(__AVX512F__) && (defined(__GNUC__) || defined(__clang__))
#define TFM_GEMM_TRANSPOSE_8X8 1
/// dst[c*ldd + r] = src[r*lds + c] for r < Rows, c < 8: unpack / shuffle / 128-bit lane permute
/// (the AVX2 form of the 16x16 transpose above, with the same Rows parameter).
template <int Rows = 8>
inline void transpose_avx2_f32_8x8(const float* src, index_t lds, float* dst, index_t ldd) {
  static_assert(Rows >= 1 && Rows <= 8);
  typedef float v8 __attribute__((vector_size(32), aligned(4)));
  v8 r[8], t[8];
  for (int i = 0; i < 8; ++i) {
    if (i < Rows)
      __builtin_memcpy(&r[i], src + i * lds, sizeof(v8));
    else
      r[i] = v8{};
  }
  for (int i = 0; i < 8; i += 2) {  // unpacklo / unpackhi
    t[i] = __builtin_shufflevector(r[i], r[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[i + 1] = __builtin_shufflevector(r[i], r[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int i = 0; i < 8; i += 4) {  // shuffle_ps 0x44 / 0xEE
    r[i] = __builtin_shufflevector(t[i], t[i + 2], 0, 1, 8, 9, 4, 5, 12, 13);
    r[i + 1] = __builtin_shufflevector(t[i], t[i + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    r[i + 2] = __builtin_shufflevector(t[i + 1], t[i + 3], 0, 1, 8, 9, 4, 5, 12, 13);
    r[i + 3] = __builtin_shufflevector(t[i + 1], t[i + 3], 2, 3, 10, 11, 6, 7, 14, 15);
  }
  for (int i = 0; i < 4; ++i) {  // permute2f128 0x20 / 0x31
    const v8 lo = __builtin_shufflevector(r[i], r[i + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    const v8 hi = __builtin_shufflevector(r[i], r[i + 4], 4, 5, 6, 7, 12, 13, 14, 15);
    __builtin_memcpy(dst + i * ldd, &lo, Rows * sizeof(float));
    __builtin_memcpy(dst + (i + 4) * ldd, &hi, Rows * sizeof(float));
  }
}
#endif

#if defined(TFM_GEMM_TRANSPOSE_16X16) || defined(TFM_GEMM_TRANSPOSE_8X8)
#define TFM_GEMM_TRANSPOSE 1
/// Source rows one register transpose handles: 16 on AVX-512, 8 on AVX2.
#if defined(TFM_GEMM_TRANSPOSE_16X16)
inline constexpr int transpose_rows = 16;
#else
inline constexpr int transpose_rows = 8;
#endif
/// dst[c*ldd + r] = src[r*lds + c] for r < Rows <= transpose_rows, c < 16: 16 depth values of a
/// packed panel, for pack_a (Rows = MR) and pack_b (Rows = transpose_rows per column block).
template <int Rows>
inline void transpose_rows_x16(const float* src, index_t lds, float* dst, index_t ldd) {
#if defined(TFM_GEMM_TRANSPOSE_16X16)
  transpose_avx512_f32_16x16<Rows>(src, lds, dst, ldd);
#else
  transpose_avx2_f32_8x8<Rows>(src, lds, dst, ldd);
  transpose_avx2_f32_8x8<Rows>(src + 8, lds, dst + 8 * ldd, ldd);
#endif
}
#endif

/// d[k*W + r] = src[r*ld + k] for r < valid and k < kn, zero for valid <= r < W: the scalar
/// transposed copy of a block into a W-wide panel (pack_a's rows, pack_b's transposed columns).
template <class T, int W>
void pack_transposed_block(const T* src, index_t ld, index_t valid, index_t kn, T* d) {
  for (index_t r = 0; r < W; ++r) {
    if (r < valid) {
      for (index_t k = 0; k < kn; ++k) d[k * W + r] = src[r * ld + k];
    } else {
      for (index_t k = 0; k < kn; ++k) d[k * W + r] = T(0);
    }
  }
}

template <class T, int MR>
void gemm_pack_a(bool trans, index_t mc, index_t kc, const T* a, index_t lda, T* dst) {
  if (trans) {
    // op(A) rows are source columns: each k reads a contiguous run of the source row for a group
    // of whole panels, so a source line is fetched once per group, and the rows (often far
    // apart: the vocabulary-wide logit gradient) are walked once instead of once per panel.
    constexpr index_t group = 16 * MR;
    const index_t full = mc / MR * MR;
    for (index_t g0 = 0; g0 < full; g0 += group) {
      const index_t g1 = std::min(full, g0 + group);
      for (index_t k = 0; k < kc; ++k) {
        const T* src = a + k * lda;
        // A fixed-size copy the compiler inlines (std::copy_n became a memmove call per panel).
        for (index_t i0 = g0; i0 < g1; i0 += MR)
          __builtin_memcpy(dst + i0 * kc + k * MR, src + i0, MR * sizeof(T));
      }
    }
    if (full < mc) {  // the last, partial panel: zero rows past mc
      T* panel = dst + full * kc;
      for (index_t k = 0; k < kc; ++k) {
        const T* src = a + k * lda + full;
        T* d = panel + k * MR;
        index_t r = 0;
        for (; r < mc - full; ++r) d[r] = src[r];
        for (; r < MR; ++r) d[r] = T(0);
      }
    }
    return;
  }
  for (index_t i0 = 0; i0 < mc; i0 += MR) {
    const index_t rows = std::min<index_t>(MR, mc - i0);
    T* panel = dst + i0 * kc;
    constexpr index_t kb = 16;
    for (index_t k0 = 0; k0 < kc; k0 += kb) {
      const index_t kn = std::min(kb, kc - k0);
      // Whole panels of 16 k: a register transpose instead of MR x 16 strided scalar copies.
#if defined(TFM_GEMM_TRANSPOSE)
      if constexpr (std::is_same_v<T, float> && MR <= transpose_rows) {
        if (kn == 16 && rows == MR) {
          transpose_rows_x16<MR>(a + i0 * lda + k0, lda, panel + k0 * MR, MR);
          continue;
        }
      }
#endif
      pack_transposed_block<T, MR>(a + i0 * lda + k0, lda, rows, kn, panel + k0 * MR);
    }
  }
}

template <class T, int NR>
void gemm_pack_b(bool trans, index_t kc, index_t nc, const T* b, index_t ldb, T* dst) {
  constexpr int W = simd::width<T>;
  for (index_t j0 = 0; j0 < nc; j0 += NR) {
    const index_t cols = std::min<index_t>(NR, nc - j0);
    T* panel = dst + j0 * kc;
    if (!trans) {
      if (cols == NR) {
        for (index_t k = 0; k < kc; ++k) {
          const T* src = b + k * ldb + j0;
          T* d = panel + k * NR;
          for (int v = 0; v < NR / W; ++v) simd::store_aligned(d + v * W, simd::load(src + v * W));
        }
      } else {
        for (index_t k = 0; k < kc; ++k) {
          const T* src = b + k * ldb + j0;
          T* d = panel + k * NR;
          index_t j = 0;
          for (; j < cols; ++j) d[j] = src[j];
          for (; j < NR; ++j) d[j] = T(0);
        }
      }
    } else {
      constexpr index_t kb = 16;
      for (index_t k0 = 0; k0 < kc; k0 += kb) {
        const index_t kn = std::min(kb, kc - k0);
#if defined(TFM_GEMM_TRANSPOSE)
        if constexpr (std::is_same_v<T, float> && NR % transpose_rows == 0) {
          if (kn == 16 && cols == NR) {
            for (index_t j = 0; j < NR; j += transpose_rows)
              transpose_rows_x16<transpose_rows>(b + (j0 + j) * ldb + k0, ldb, panel + k0 * NR + j,
                                                 NR);
            continue;
          }
        }
#endif
        pack_transposed_block<T, NR>(b + j0 * ldb + k0, ldb, cols, kn, panel + k0 * NR);
      }
    }
  }
}

}  // namespace detail
}  // namespace cpu_kernels

TFM_END_NAMESPACE
