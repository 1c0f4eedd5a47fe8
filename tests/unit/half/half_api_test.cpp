// Type properties, numeric_limits values (checked against the IEEE / bfloat16 definitions written
// as float literals), comparisons and the trait.
#include "typeformer/core/half.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <type_traits>

static_assert(sizeof(tfm::bf16) == 2 && sizeof(tfm::f16) == 2);
static_assert(std::is_trivially_copyable_v<tfm::bf16> && std::is_trivially_copyable_v<tfm::f16>);
static_assert(std::is_standard_layout_v<tfm::bf16> && std::is_standard_layout_v<tfm::f16>);
static_assert(!std::is_convertible_v<float, tfm::bf16>, "construction from float is explicit");
static_assert(!std::is_convertible_v<double, tfm::f16>, "construction from double is explicit");
static_assert(std::is_convertible_v<tfm::bf16, float> && std::is_convertible_v<tfm::f16, float>);
static_assert(tfm::is_half_v<tfm::bf16> && tfm::is_half_v<const tfm::f16>);
static_assert(!tfm::is_half_v<float> && !tfm::is_half_v<std::uint16_t>);

TEST_CASE("numeric_limits<bf16> matches the bfloat16 definition") {
  using L = std::numeric_limits<tfm::bf16>;
  CHECK(float(L::max()) == 0x1.FEp127f);
  CHECK(float(L::lowest()) == -0x1.FEp127f);
  CHECK(float(L::min()) == 0x1p-126f);
  CHECK(float(L::epsilon()) == 0x1p-7f);
  CHECK(float(L::denorm_min()) == 0x1p-133f);
  CHECK(float(L::round_error()) == 0.5f);
  CHECK(std::isinf(float(L::infinity())));
  CHECK(std::isnan(float(L::quiet_NaN())));
  CHECK(std::isnan(float(L::signaling_NaN())));
  CHECK(L::digits == 8);
  // epsilon is the gap between 1 and the next representable value.
  CHECK(float(tfm::bf16::from_bits(tfm::bf16(1.0f).bits() + 1)) - 1.0f == float(L::epsilon()));
}

TEST_CASE("numeric_limits<f16> matches IEEE binary16") {
  using L = std::numeric_limits<tfm::f16>;
  CHECK(float(L::max()) == 65504.0f);
  CHECK(float(L::lowest()) == -65504.0f);
  CHECK(float(L::min()) == 0x1p-14f);
  CHECK(float(L::epsilon()) == 0x1p-10f);
  CHECK(float(L::denorm_min()) == 0x1p-24f);
  CHECK(std::isinf(float(L::infinity())));
  CHECK(std::isnan(float(L::quiet_NaN())));
  CHECK(std::isnan(float(L::signaling_NaN())));
  CHECK(L::digits == 11);
  CHECK(L::is_iec559);
  CHECK(float(tfm::f16::from_bits(tfm::f16(1.0f).bits() + 1)) - 1.0f == float(L::epsilon()));
}

TEST_CASE("comparisons go through float") {
  const tfm::f16 pz(0.0f), nz(-0.0f), one(1.0f), two(2.0f);
  CHECK(pz == nz);
  CHECK(pz.bits() != nz.bits());
  CHECK(one < two);
  CHECK_FALSE(two < one);
  CHECK(one != two);
  const tfm::bf16 nan = std::numeric_limits<tfm::bf16>::quiet_NaN();
  CHECK_FALSE(nan == nan);
  CHECK(nan != nan);
  CHECK(tfm::bf16(3.0f) == tfm::bf16(3.0));
  // Mixed arithmetic widens to float.
  const float s = tfm::bf16(1.5f) + tfm::f16(2.25f);
  CHECK(s == 3.75f);
  static_assert(tfm::f16(1.0f) < tfm::f16(2.0f));
}
