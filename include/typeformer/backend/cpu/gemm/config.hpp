// typeformer/backend/cpu/gemm/config.hpp
//
// WHAT THIS REPRESENTS
//   The register and cache blocking of the packed GEMM for each target ISA and element type,
//   chosen at compile time from the target macros. Each configuration is a type named after
//   what it computes: gemm_avx512_f32_12x32 is the AVX-512 float micro-kernel that keeps a
//   12 x 32 tile of C in registers.
//
//   The loop nest is BLIS's (Van Zee & van de Geijn, "BLIS: A Framework for Rapidly
//   Instantiating BLAS Functionality", ACM TOMS 2015) applied to the transposed product
//   C^T = B^T A^T, so that the vector dimension runs along N of the row-major C:
//
//     for ic in M step mc            A block  (mc x kc) packed in panels of mr rows   -> L3
//       for pc in K step kc
//         for jc in N step nc        B block  (kc x nc) packed in panels of nr columns -> L2
//           for ir in mc step mr     A panel  (mr x kc)                               -> L1
//             for jr in nc step nr   micro-kernel: C(mr x nr) += A panel * B panel
//
//   mr * kc * sizeof(T) fits in half of L1d; kc * nc * sizeof(T) fits in about 3/4 of L2.
//   The values were tuned with bench/kernels/bench_gemm on an AMD EPYC Zen 4 (32 KiB L1d,
//   1 MiB L2 per core). KC also fixes the summation order, so results do not depend on the
//   thread count.
#pragma once

#include "typeformer/backend/cpu/simd.hpp"
#include "typeformer/core/index.hpp"

TFM_BEGIN_NAMESPACE

namespace cpu_kernels {

/// Describes one micro-kernel configuration: element type, mr rows x (nv vectors) columns, and
/// the cache blocks kc (depth), mc (rows of the A block) and nc (columns of the B block).
template <class T, int MR, int NV, index_t KC, index_t MC, index_t NC>
struct gemm_blocking {
  using value_type = T;
  static constexpr int mr = MR;
  static constexpr int nv = NV;
  static constexpr int nr = NV * simd::width<T>;
  static constexpr index_t kc = KC;
  static constexpr index_t mc = (MC / MR) * MR;
  static constexpr index_t nc = (NC / (NV * simd::width<T>)) * (NV * simd::width<T>);
  static_assert(mc > 0 && nc > 0 && kc > 0, "gemm blocking: every block must hold one tile");
};

#if defined(__AVX512F__)
struct gemm_avx512_f32_12x32 : gemm_blocking<float, 12, 2, 384, 2016, 384> {
  static constexpr const char* name = "gemm_avx512_f32_12x32";
};
struct gemm_avx512_f64_12x16 : gemm_blocking<double, 12, 2, 192, 2016, 384> {
  static constexpr const char* name = "gemm_avx512_f64_12x16";
};
using gemm_config_f32 = gemm_avx512_f32_12x32;
using gemm_config_f64 = gemm_avx512_f64_12x16;
#elif defined(__AVX2__) && defined(__FMA__)
struct gemm_avx2_f32_6x16 : gemm_blocking<float, 6, 2, 256, 1008, 512> {
  static constexpr const char* name = "gemm_avx2_f32_6x16";
};
struct gemm_avx2_f64_6x8 : gemm_blocking<double, 6, 2, 256, 1008, 256> {
  static constexpr const char* name = "gemm_avx2_f64_6x8";
};
using gemm_config_f32 = gemm_avx2_f32_6x16;
using gemm_config_f64 = gemm_avx2_f64_6x8;
#elif defined(__aarch64__)
struct gemm_neon_f32_8x8 : gemm_blocking<float, 8, 2, 256, 1008, 512> {
  static constexpr const char* name = "gemm_neon_f32_8x8";
};
struct gemm_neon_f64_8x4 : gemm_blocking<double, 8, 2, 256, 1008, 256> {
  static constexpr const char* name = "gemm_neon_f64_8x4";
};
using gemm_config_f32 = gemm_neon_f32_8x8;
using gemm_config_f64 = gemm_neon_f64_8x4;
#else
/// Any other xsimd target (SSE2, ...): 4 rows x 2 vectors.
struct gemm_xsimd_f32_4x2v : gemm_blocking<float, 4, 2, 256, 1008, 256> {
  static constexpr const char* name = "gemm_xsimd_f32_4x2v";
};
struct gemm_xsimd_f64_4x2v : gemm_blocking<double, 4, 2, 256, 1008, 256> {
  static constexpr const char* name = "gemm_xsimd_f64_4x2v";
};
using gemm_config_f32 = gemm_xsimd_f32_4x2v;
using gemm_config_f64 = gemm_xsimd_f64_4x2v;
#endif

/// The configuration used for element type T (float or double).
template <class T>
struct gemm_config_for;
template <>
struct gemm_config_for<float> {
  using type = gemm_config_f32;
};
template <>
struct gemm_config_for<double> {
  using type = gemm_config_f64;
};
template <class T>
using gemm_config_t = typename gemm_config_for<T>::type;

}  // namespace cpu_kernels

TFM_END_NAMESPACE
