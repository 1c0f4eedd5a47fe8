// double: every (M, N, K) of the size sweep x all four transposition combinations vs the reference.
#include "sweep_common.hpp"

TEST_CASE("gemm f64 matches the reference over the size sweep and all transpositions") {
  gemm_test::sweep_all<double>(gemm_test::seed_or(20240602));
}
