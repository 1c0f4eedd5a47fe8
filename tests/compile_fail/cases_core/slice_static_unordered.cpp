// ko: static slice bounds [3, 1): the end is before the begin.
#include "typeformer/core/view.hpp"

int main() {
  tfm::tensor<float, tfm::shape<3, 5>> a;
#if TFM_KO
  auto v = tfm::slice<1, 3, 1>(a);  // ko: End < Begin
#else
  auto v = tfm::slice<1, 1, 3>(a);  // ok
#endif
  (void)v;
}
