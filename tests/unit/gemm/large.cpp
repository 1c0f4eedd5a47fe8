// Shapes larger than one cache block (mc, kc, nc of gemm/config.hpp) in every dimension, with
// padded leading dimensions, for all four transposition combinations.
#include "gemm_test_util.hpp"

namespace {

using gemm_test::gemm_case;

template <class T>
void check_shape(tfm::index_t M, tfm::index_t N, tfm::index_t K, std::uint64_t seed) {
  MESSAGE("seed " << seed);
  std::mt19937_64 rng(seed);
  using Cfg = tfm::cpu_kernels::gemm_config_t<T>;
  MESSAGE("kernel " << std::string(Cfg::name) << " mc=" << Cfg::mc << " kc=" << Cfg::kc
                    << " nc=" << Cfg::nc);
  for (int t = 0; t < 4; ++t) {
    gemm_case c;
    c.ta = t & 1;
    c.tb = (t >> 1) & 1;
    c.M = M;
    c.N = N;
    c.K = K;
    c.pad_a = 5;
    c.pad_b = 3;
    c.pad_c = 7;
    c.alpha = t == 3 ? 0.5 : 1.0;
    c.beta = t == 2 ? -1.0 : 0.0;
    const double e = gemm_test::run_case<T>(c, rng);
    INFO(gemm_test::describe(c));
    CHECK(e <= gemm_test::nmse_limit<T>());
    CHECK(e <= gemm_test::nmse_expected<T>());
  }
}

}  // namespace

TEST_CASE("gemm f32 on shapes larger than one cache block") {
  using Cfg = tfm::cpu_kernels::gemm_config_t<float>;
  static_assert(Cfg::kc < 600 && Cfg::nc < 520, "the shape must cross the kc and nc blocks");
  check_shape<float>(300, 520, 600, gemm_test::seed_or(11));
  // crosses the mc block (rows) as well
  check_shape<float>(Cfg::mc + 29, 70, Cfg::kc + 11, gemm_test::seed_or(12));
}

TEST_CASE("gemm f64 on shapes larger than one cache block") {
  using Cfg = tfm::cpu_kernels::gemm_config_t<double>;
  check_shape<double>(150, Cfg::nc + 37, Cfg::kc + 45, gemm_test::seed_or(13));
  check_shape<double>(Cfg::mc + 13, 45, Cfg::kc + 3, gemm_test::seed_or(14));
}
