// Demonstration ok/ko pair. ok: equal extents compile. ko (TFM_KO=1): extents 3 and 4 must stop
// the build at this line with the sentence from common_extent's static_assert.
#include "demo_extent.hpp"

#if TFM_KO && !TFM_DEMO_KO_COMPILES
constexpr long extent = tfm_compile_fail_demo::common_extent<3, 4>();
#else
constexpr long extent = tfm_compile_fail_demo::common_extent<4, 4>();
#endif

static_assert(extent == 4);
