// typeformer/backend/cpu/gemm.hpp
//
// WHAT THIS REPRESENTS
//   Matrix products of the cpu backend on raw row-major pointers (float and double):
//
//     C(M,N) = alpha * op(A)(M,K) * op(B)(K,N) + beta * C
//
//   op(A) = A, stored M x K (element (i,k) at A[i*lda + k]), or with trans_a A^T, A stored K x M
//   (element (i,k) at A[k*lda + i]); the same for B with ldb (trans_b: B stored N x K, the layout
//   of nn weights). C(i,j) is C[i*ldc + j] and must not overlap A or B.
//   beta == 0 means C is not read (it may hold NaN); alpha == 0 or K == 0 means A and B are not
//   read. Leading dimensions are any values that keep every element inside its buffer.
//
//   Paths, chosen only from the shape (never from the thread count):
//     M == 1 or N == 1      gemv (gemm/gemv.hpp), bandwidth-bound stream over the matrix
//     M*N*K <= 16^3        row-by-row gemv, no packing (tiny products only: already at
//                           2x64x64 the packed micro-kernel is 1.7x faster, at 64^3 with a
//                           transposed B 6x, since the gemv re-streams B once per row of A)
//     otherwise             packed, cache-blocked GEMM with the register-blocked micro-kernel of
//                           gemm/config.hpp (e.g. gemm_avx512_f32_12x32), OpenMP over M or N
//   DETERMINISM: every element of C is computed by one thread in an order fixed by the shape, so
//   1 and N threads give bitwise identical results. Threads: tfm::set_num_threads /
//   tfm::thread_scope (backend/cpu/parallel.hpp); inside a parallel region the kernels run
//   serially.
#pragma once

#include "typeformer/backend/cpu/gemm/config.hpp"
#include "typeformer/backend/cpu/gemm/gemv.hpp"
#include "typeformer/backend/cpu/gemm/microkernel.hpp"
#include "typeformer/backend/cpu/gemm/pack.hpp"
#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/core/index.hpp"

#include <algorithm>
#include <type_traits>

TFM_BEGIN_NAMESPACE

namespace cpu_kernels {
namespace detail {

/// Below this many multiply-adds the packed path does not pay for its packing.
inline constexpr index_t gemm_small_work = index_t(16) * 16 * 16;
/// Multiply-adds one extra thread must get before it is started.
inline constexpr index_t gemm_work_per_thread = index_t(1) << 20;

/// The micro-kernel over a packed A block (mc rows) and a packed B block (nc columns) into C.
template <class Cfg>
TFM_ALWAYS_INLINE void gemm_sweep(index_t mc, index_t nc, index_t kc,
                                  const typename Cfg::value_type* apack,
                                  const typename Cfg::value_type* bpack,
                                  typename Cfg::value_type* C, index_t ldc,
                                  typename Cfg::value_type alpha, typename Cfg::value_type beta_k,
                                  bool read_c) {
  constexpr index_t MR = Cfg::mr, NR = Cfg::nr;
  for (index_t ir = 0; ir < mc; ir += MR) {
    const index_t rows = std::min(MR, mc - ir);
    const typename Cfg::value_type* ap = apack + ir * kc;
    for (index_t jr = 0; jr < nc; jr += NR)
      gemm_tile<Cfg>(rows, std::min(NR, nc - jr), kc, ap, bpack + jr * kc, C + ir * ldc + jr, ldc,
                     alpha, beta_k, read_c);
  }
}

/// Runs the packed loop nest of gemm/config.hpp on rows [m0, m1) and columns [n0, n1) of C.
template <class Cfg>
void gemm_packed_range(bool ta, bool tb, index_t m0, index_t m1, index_t n0, index_t n1, index_t K,
                       typename Cfg::value_type alpha, const typename Cfg::value_type* A,
                       index_t lda, const typename Cfg::value_type* B, index_t ldb,
                       typename Cfg::value_type beta, typename Cfg::value_type* C, index_t ldc) {
  using T = typename Cfg::value_type;
  constexpr index_t MR = Cfg::mr, NR = Cfg::nr;
  const index_t kc_max = std::min(Cfg::kc, K);
  // Rows split into equal blocks of at most mc (a last sliver would repack all of B for little
  // work); block edges do not change any element's arithmetic.
  const index_t m_blocks = (m1 - m0 + Cfg::mc - 1) / Cfg::mc;
  const index_t mc_step = ((m1 - m0 + m_blocks - 1) / m_blocks + MR - 1) / MR * MR;
  T* apack = gemm_thread_buffer<T>(0, mc_step * kc_max);
  T* bpack = gemm_thread_buffer<T>(1, std::min(Cfg::nc, (n1 - n0 + NR - 1) / NR * NR) * kc_max);

  for (index_t ic = m0; ic < m1; ic += mc_step) {
    const index_t mc = std::min(mc_step, m1 - ic);
    for (index_t pc = 0; pc < K; pc += Cfg::kc) {
      const index_t kc = std::min(Cfg::kc, K - pc);
      const bool read_c = pc > 0 || beta != T(0);
      const T beta_k = pc > 0 ? T(1) : beta;
      gemm_pack_a<T, Cfg::mr>(ta, mc, kc, ta ? A + pc * lda + ic : A + ic * lda + pc, lda, apack);
      for (index_t jc = n0; jc < n1; jc += Cfg::nc) {
        const index_t nc = std::min(Cfg::nc, n1 - jc);
        gemm_pack_b<T, Cfg::nr>(tb, kc, nc, tb ? B + jc * ldb + pc : B + pc * ldb + jc, ldb, bpack);
        gemm_sweep<Cfg>(mc, nc, kc, apack, bpack, C + ic * ldc + jc, ldc, alpha, beta_k, read_c);
      }
    }
  }
}

#if TFM_HAS_OPENMP
/// The share [i0, i1) of `count` items (panels) that thread t of `parts` packs.
inline void gemm_share(index_t count, int t, int parts, index_t& i0, index_t& i1) {
  i0 = count * t / parts;
  i1 = count * (t + 1) / parts;
}

/// Thread t's part of a packed GEMM split along M and run by a team of `parts` threads that
/// packs B once, together, instead of once per thread: each thread owns a band of whole row
/// tiles (at most mc rows, so one A block that it packs itself), and every B block (kc x nc) is
/// packed by the team, a share of its NR-column panels per thread. The B block is
/// double-buffered in `shared` (two blocks), so one barrier per block separates its packing
/// from its use: a thread can only refill a buffer after every thread has passed the next
/// block's barrier, which each reaches after finishing the computation that read it. Blocks,
/// packed values and micro-kernel calls are those of gemm_packed_range on the same band, so
/// results do not change with the thread count.
template <class Cfg>
void gemm_packed_team(int t, int parts, index_t units, bool ta, bool tb, index_t M, index_t N,
                      index_t K, typename Cfg::value_type alpha, const typename Cfg::value_type* A,
                      index_t lda, const typename Cfg::value_type* B, index_t ldb,
                      typename Cfg::value_type beta, typename Cfg::value_type* C, index_t ldc,
                      typename Cfg::value_type* shared, index_t shared_block) {
  using T = typename Cfg::value_type;
  constexpr index_t MR = Cfg::mr, NR = Cfg::nr;
  const index_t kc_max = std::min(Cfg::kc, K);
  index_t u0, u1;
  gemm_share(units, t, parts, u0, u1);
  const index_t m0 = u0 * MR, m1 = std::min(M, u1 * MR);
  T* apack = gemm_thread_buffer<T>(0, (m1 - m0 + MR - 1) / MR * MR * kc_max);
  int buf = 0;
  for (index_t pc = 0; pc < K; pc += Cfg::kc) {
    const index_t kc = std::min(Cfg::kc, K - pc);
    const bool read_c = pc > 0 || beta != T(0);
    const T beta_k = pc > 0 ? T(1) : beta;
    gemm_pack_a<T, Cfg::mr>(ta, m1 - m0, kc, ta ? A + pc * lda + m0 : A + m0 * lda + pc, lda,
                            apack);
    for (index_t jc = 0; jc < N; jc += Cfg::nc) {
      const index_t nc = std::min(Cfg::nc, N - jc);
      T* bpack = shared + buf * shared_block;
      buf ^= 1;
      index_t q0, q1;
      gemm_share((nc + NR - 1) / NR, t, parts, q0, q1);
      if (q1 > q0) {
        const index_t j0 = q0 * NR;
        gemm_pack_b<T, Cfg::nr>(tb, kc, std::min(nc, q1 * NR) - j0,
                                tb ? B + (jc + j0) * ldb + pc : B + pc * ldb + jc + j0, ldb,
                                bpack + j0 * kc);
      }
      TFM_OMP(barrier)
      gemm_sweep<Cfg>(m1 - m0, nc, kc, apack, bpack, C + m0 * ldc + jc, ldc, alpha, beta_k, read_c);
    }
  }
}
#endif

/// How the packed GEMMs (gemm_packed, gemm_half_bt, gemm_dq_bt) split C over threads: `parts`
/// bands of whole tiles (`unit` = mr rows or nr columns) along the longer of M and N, at most
/// nt of them and at most one per gemm_work_per_thread of work. A band is a function of the
/// shape and `parts` only, so each element of C is computed by one thread in a fixed order.
struct gemm_band_split {
  bool split_m = true;
  index_t unit = 1, units = 0;
  int parts = 1;
  /// Runs range(m0, m1, n0, n1) on band p: rows [m0, m1) and columns [n0, n1) of C (M x N).
  template <class F>
  void run(int p, index_t M, index_t N, F& range) const {
    const index_t u0 = units * p / parts, u1 = units * (p + 1) / parts;
    if (split_m)
      range(u0 * unit, std::min(M, u1 * unit), index_t(0), N);
    else
      range(index_t(0), M, u0 * unit, std::min(N, u1 * unit));
  }
};

template <class Cfg>
gemm_band_split gemm_band_split_of(index_t M, index_t N, index_t K, int nt) {
  gemm_band_split s;
  s.split_m = M >= N;
  s.unit = s.split_m ? Cfg::mr : Cfg::nr;
  s.units = ((s.split_m ? M : N) + s.unit - 1) / s.unit;
  s.parts = static_cast<int>(std::max<index_t>(
      1, std::min<index_t>({index_t(nt), s.units, M * N * K / gemm_work_per_thread})));
  return s;
}

/// Runs range(m0, m1, n0, n1) on every band of `s` (M x N), on s.parts threads.
template <class F>
void gemm_run_bands(const gemm_band_split& s, index_t M, index_t N, F&& range) {
  if (s.parts == 1) {
    s.run(0, M, N, range);
    return;
  }
  TFM_OMP(parallel for num_threads(s.parts) schedule(static, 1))
  for (int p = 0; p < s.parts; ++p) s.run(p, M, N, range);
}

/// The band split of gemm_config Cfg, run: gemm_run_bands(gemm_band_split_of<Cfg>(...), ...).
template <class Cfg, class F>
void gemm_bands(index_t M, index_t N, index_t K, int nt, F&& range) {
  gemm_run_bands(gemm_band_split_of<Cfg>(M, N, K, nt), M, N, range);
}

/// Packed GEMM on `nt` threads: C is split into nt bands of whole tiles along the longer of M
/// and N. Row bands (with OpenMP, each within one A block) share B, which the team packs once,
/// together (gemm_packed_team). Column bands pack their own copy of A: sharing it too cost up to
/// 5-10% on 256x768x3072 (a barrier for each of its 8 depth blocks, on a VM whose threads
/// drift apart) and gained nothing measurable in training.
template <class T>
void gemm_packed(bool ta, bool tb, index_t M, index_t N, index_t K, T alpha, const T* A,
                 index_t lda, const T* B, index_t ldb, T beta, T* C, index_t ldc, int nt) {
  using Cfg = gemm_config_t<T>;
  const gemm_band_split split = gemm_band_split_of<Cfg>(M, N, K, nt);
  auto range = [&](index_t m0, index_t m1, index_t n0, index_t n1) {
    gemm_packed_range<Cfg>(ta, tb, m0, m1, n0, n1, K, alpha, A, lda, B, ldb, beta, C, ldc);
  };
#if TFM_HAS_OPENMP
  const int parts = split.parts;
  const index_t units = split.units;
  const index_t kc_max = std::min(Cfg::kc, K);
  if (parts > 1 && split.split_m && (units + parts - 1) / parts * Cfg::mr <= Cfg::mc) {
    // Two shared B blocks (kc x nc) in the calling thread's scratch slot 3.
    index_t block = std::min(Cfg::nc, (N + Cfg::nr - 1) / Cfg::nr * Cfg::nr) * kc_max;
    block = (block + 15) / 16 * 16;  // keep the second block 64-byte aligned
    T* shared = gemm_thread_buffer<T>(3, 2 * block);
    TFM_OMP(parallel num_threads(parts)) {
      const int got = omp_get_num_threads();
      if (got == parts) {
        gemm_packed_team<Cfg>(omp_get_thread_num(), parts, units, ta, tb, M, N, K, alpha, A, lda, B,
                              ldb, beta, C, ldc, shared, block);
      } else {  // the runtime gave fewer threads: each takes whole bands, packing its own
        for (int p = omp_get_thread_num(); p < parts; p += got) split.run(p, M, N, range);
      }
    }
    return;
  }
#endif
  gemm_run_bands(split, M, N, range);
}

/// op(A) row i as a contiguous vector: A itself when it is one, else gathered into `tmp`.
template <class T>
const T* gemm_row_of_a(bool ta, index_t i, index_t K, const T* A, index_t lda, T* tmp) {
  if (!ta) return A + i * lda;
  if (lda == 1) return A + i;
  for (index_t k = 0; k < K; ++k) tmp[k] = A[k * lda + i];
  return tmp;
}

template <class T>
void gemm_scale_c(index_t M, index_t N, T beta, T* C, index_t ldc) {
  for (index_t i = 0; i < M; ++i) {
    T* c = C + i * ldc;
    if (beta == T(0)) {
      std::fill(c, c + N, T(0));
    } else if (beta != T(1)) {
      for (index_t j = 0; j < N; ++j) c[j] *= beta;
    }
  }
}

/// Single product on up to nt threads (see the file comment for the path choice).
template <class T>
void gemm_dispatch(bool ta, bool tb, index_t M, index_t N, index_t K, T alpha, const T* A,
                   index_t lda, const T* B, index_t ldb, T beta, T* C, index_t ldc, int nt) {
  if (M == 0 || N == 0) return;
  if (K == 0 || alpha == T(0)) {
    gemm_scale_c(M, N, beta, C, ldc);
    return;
  }
  if (N == 1 && M > 1) {
    // C(:,0) = op(A) * b, with b = op(B)(:, 0).
    const T* b = B;
    if (!tb && ldb != 1) {
      T* tmp = gemm_thread_buffer<T>(2, K);
      for (index_t k = 0; k < K; ++k) tmp[k] = B[k * ldb];
      b = tmp;
    }
    if (ta) {
      gemv_axpy(M, K, alpha, A, lda, b, beta, C, ldc, nt);
    } else {
      gemv_dot(M, K, alpha, A, lda, b, beta, C, ldc, nt);
    }
    return;
  }
  if (M == 1 || M * N * K <= gemm_small_work) {
    // Row i of C = op(A)(i,:) * op(B), a gemv with the rows of op(A) as vectors.
    T* tmp = ta && lda != 1 ? gemm_thread_buffer<T>(2, K) : nullptr;
    for (index_t i = 0; i < M; ++i) {
      const T* a = gemm_row_of_a(ta, i, K, A, lda, tmp);
      if (tb) {
        gemv_dot(N, K, alpha, B, ldb, a, beta, C + i * ldc, index_t(1), nt);
      } else {
        gemv_axpy(N, K, alpha, B, ldb, a, beta, C + i * ldc, index_t(1), nt);
      }
    }
    return;
  }
  gemm_packed(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, nt);
}

template <class T>
void gemm_check(const char* who, index_t M, index_t N, index_t K) {
  if (M < 0 || N < 0 || K < 0)
    fail(errc::value, who, ": the sizes M=", M, ", N=", N, ", K=", K, " must not be negative.");
}

}  // namespace detail

/// C(M,N) = alpha * op(A)(M,K) * op(B)(K,N) + beta * C on row-major buffers (file comment).
/// Throws tfm::value_error for negative sizes.
template <class T>
void gemm(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, T alpha, const T* A,
          index_t lda, const T* B, index_t ldb, T beta, T* C, index_t ldc) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "tfm::cpu_kernels::gemm supports float and double elements.");
  detail::gemm_check<T>("gemm", M, N, K);
  detail::gemm_dispatch(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc,
                        in_parallel() ? 1 : num_threads());
}

namespace detail {
template <class T>
void gemm_bt_row_stable(index_t M, index_t N, index_t K, const T* A, index_t lda, const T* B,
                        index_t ldb, T* C, index_t ldc, bool accumulate) {
  gemm_check<T>("gemm_bt_row_stable", M, N, K);
  if (M == 0 || N == 0) return;
  if (K == 0) {
    if (!accumulate) gemm_scale_c(M, N, T(0), C, ldc);
    return;
  }
  gemm_packed(false, true, M, N, K, T(1), A, lda, B, ldb, accumulate ? T(1) : T(0), C, ldc,
              in_parallel() ? 1 : num_threads());
}
}  // namespace detail

/// C(M, N) = A(M, K) B(N, K)^T (+ C when accumulate) on the packed kernel whatever the shape:
/// unlike gemm(), which takes a GEMV for M == 1 and tiny products (another summation order), a
/// row of C is then the same bits for every M (and an element the same bits whatever block of
/// rows or columns of C it is computed in). The serving engine's batches rely on it
/// (infer/batch.hpp: a sequence's logits do not depend on what shares its step), and so does the
/// fused head + loss (backend/cpu/linear_loss.hpp). Where gemm() takes its packed path (M > 1,
/// N > 1, M N K > 16^3) the elements are bitwise gemm()'s.
inline void gemm_bt_row_stable(index_t M, index_t N, index_t K, const float* A, index_t lda,
                               const float* B, index_t ldb, float* C, index_t ldc,
                               bool accumulate) {
  detail::gemm_bt_row_stable<float>(M, N, K, A, lda, B, ldb, C, ldc, accumulate);
}

/// The same in double.
inline void gemm_bt_row_stable(index_t M, index_t N, index_t K, const double* A, index_t lda,
                               const double* B, index_t ldb, double* C, index_t ldc,
                               bool accumulate) {
  detail::gemm_bt_row_stable<double>(M, N, K, A, lda, B, ldb, C, ldc, accumulate);
}

/// Strided batch of gemm: product b reads A + b*stride_a and B + b*stride_b and writes
/// C + b*stride_c (strides in elements; 0 broadcasts an operand; stride_c may be 0 only when
/// batch <= 1). Small products run in parallel over the batch, large ones one after another
/// on all threads; the result does not depend on the thread count either way.
template <class T>
void gemm_batched(bool trans_a, bool trans_b, index_t batch, index_t M, index_t N, index_t K,
                  T alpha, const T* A, index_t lda, index_t stride_a, const T* B, index_t ldb,
                  index_t stride_b, T beta, T* C, index_t ldc, index_t stride_c) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "tfm::cpu_kernels::gemm_batched supports float and double elements.");
  detail::gemm_check<T>("gemm_batched", M, N, K);
  if (batch < 0) fail(errc::value, "gemm_batched: the batch count ", batch, " is negative.");
  if (batch > 1 && stride_c == 0 && M > 0 && N > 0)
    fail(errc::value, "gemm_batched: stride_c is 0 with batch ", batch,
         ", so every product would overwrite the same C.");
  const int nt = in_parallel() ? 1 : num_threads();
  const index_t work = M * N * std::max<index_t>(K, 1);
  if (nt > 1 && batch > 1 && work < index_t(nt) * detail::gemm_work_per_thread) {
    const int parts = static_cast<int>(std::min<index_t>(nt, batch));
    TFM_OMP(parallel for num_threads(parts) schedule(static))
    for (index_t b = 0; b < batch; ++b)
      detail::gemm_dispatch(trans_a, trans_b, M, N, K, alpha, A + b * stride_a, lda,
                            B + b * stride_b, ldb, beta, C + b * stride_c, ldc, 1);
    return;
  }
  for (index_t b = 0; b < batch; ++b)
    detail::gemm_dispatch(trans_a, trans_b, M, N, K, alpha, A + b * stride_a, lda, B + b * stride_b,
                          ldb, beta, C + b * stride_c, ldc, nt);
}

}  // namespace cpu_kernels

TFM_END_NAMESPACE
