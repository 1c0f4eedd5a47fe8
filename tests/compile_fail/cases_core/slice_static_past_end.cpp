// ko: static slice bounds [2, 6) on an axis of static extent 5.
#include "typeformer/core/view.hpp"

int main() {
  tfm::tensor<float, tfm::shape<3, 5>> a;
#if TFM_KO
  auto v = tfm::slice<1, 2, 6>(a);  // ko: ends past extent 5
#else
  auto v = tfm::slice<1, 2, 5>(a);  // ok
#endif
  (void)v;
}
