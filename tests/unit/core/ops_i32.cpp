// Integer-capable elementwise ops on int32 storage (computed in int32 by both backends): cpu vs
// reference vs an oracle in double (exact for these magnitudes); every result must match bitwise.
#include "elementwise_check.hpp"

namespace {
template <class T>
void check_all_integer_ops(std::uint64_t salt) {
  using namespace core_test;
  SUBCASE("add") { check_op_sweep<op_add, T>(salt + 1); }
  SUBCASE("sub") { check_op_sweep<op_sub, T>(salt + 2); }
  SUBCASE("mul") { check_op_sweep<op_mul, T>(salt + 3); }
  SUBCASE("minimum") { check_op_sweep<op_minimum, T>(salt + 5); }
  SUBCASE("maximum") { check_op_sweep<op_maximum, T>(salt + 6); }
  SUBCASE("less") { check_op_sweep<op_less, T>(salt + 8); }
  SUBCASE("less_equal") { check_op_sweep<op_less_equal, T>(salt + 9); }
  SUBCASE("greater") { check_op_sweep<op_greater, T>(salt + 10); }
  SUBCASE("greater_equal") { check_op_sweep<op_greater_equal, T>(salt + 11); }
  SUBCASE("eq") { check_op_sweep<op_eq, T>(salt + 12); }
  SUBCASE("ne") { check_op_sweep<op_ne, T>(salt + 13); }
  SUBCASE("where") { check_op_sweep<op_where, T>(salt + 14); }
  SUBCASE("neg") { check_op_sweep<op_neg, T>(salt + 15); }
  SUBCASE("abs") { check_op_sweep<op_abs, T>(salt + 17); }
  SUBCASE("relu") { check_op_sweep<op_relu, T>(salt + 18); }
}
// The integer-capable set is exactly the functors that declare integer_ok (the others are
// rejected at compile time; see tests/compile_fail/cases/integer_exp_ko.cpp).
static_assert(tfm::op::add::integer_ok && tfm::op::sub::integer_ok && tfm::op::mul::integer_ok &&
              tfm::op::minimum::integer_ok && tfm::op::maximum::integer_ok &&
              tfm::op::less::integer_ok && tfm::op::equal::integer_ok &&
              tfm::op::where::integer_ok && tfm::op::neg::integer_ok && tfm::op::abs::integer_ok &&
              tfm::op::relu::integer_ok);
static_assert(!tfm::op::div::integer_ok && !tfm::op::exp::integer_ok && !tfm::op::pow::integer_ok &&
              !tfm::op::sqrt::integer_ok && !tfm::op::gelu_erf::integer_ok);
}  // namespace

TEST_CASE("elementwise ops, int32 storage: cpu and reference vs oracle, size sweep") {
  check_all_integer_ops<std::int32_t>(0x13200);
}

TEST_CASE("int32 results are computed in int32 (compute_t) and mixed with scalars exactly") {
  using I = tfm::tensor<std::int32_t, tfm::shape<tfm::dyn>>;
  static_assert(std::is_same_v<tfm::compute_t<std::int32_t>, std::int32_t>);
  I c(4);
  tfm_test::from_vector(c, std::vector<std::int32_t>{-7, -1, 0, 16777217});
  I d = c * 2 + 1;  // 16777217 is not representable in float: an int path must keep it exact
  CHECK(tfm_test::to_vector(d) == std::vector<std::int32_t>{-13, -1, 1, 33554435});
  tfm::tensor<std::int32_t, tfm::shape<tfm::dyn>, tfm::reference> dr = c * 2 + 1;
  CHECK(tfm_test::to_vector(dr) == std::vector<std::int32_t>{-13, -1, 1, 33554435});
}
