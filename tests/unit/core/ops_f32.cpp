// Every float-capable elementwise op on float storage: cpu vs reference vs a double oracle, over
// the size sweep (see elementwise_check.hpp for the tolerances).
#include "elementwise_check.hpp"

TEST_CASE("elementwise ops, f32 storage: cpu and reference vs double oracle, size sweep") {
  core_test::check_all_float_ops<float>(0x3200);
}
