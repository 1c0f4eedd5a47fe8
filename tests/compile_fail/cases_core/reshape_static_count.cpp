// ko: a static reshape of (4, 6) (24 elements) to (5, 5) (25 elements).
#include "typeformer/core/view.hpp"

int main() {
  tfm::tensor<float, tfm::shape<4, 6>> a;
#if TFM_KO
  auto v = tfm::reshape<tfm::shape<5, 5>>(a);  // ko: 25 elements
#else
  auto v = tfm::reshape<tfm::shape<3, 8>>(a);  // ok: 24 elements
#endif
  (void)v;
}
