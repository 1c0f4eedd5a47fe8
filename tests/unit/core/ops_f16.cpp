// Every float-capable elementwise op on tfm::f16 storage: cpu vs reference vs a double oracle, over
// the size sweep (see elementwise_check.hpp for the tolerances).
#include "elementwise_check.hpp"

TEST_CASE("elementwise ops, f16 storage: cpu and reference vs double oracle, size sweep") {
  core_test::check_all_float_ops<tfm::f16>(0xf1600);
}
