// ko: a reduction along axis 3 of a rank-3 tensor.
#include "typeformer/backend/cpu/elementwise.hpp"
#include "typeformer/backend/cpu/reduce.hpp"

int main() {
#if TFM_KO
  tfm::tensor<float, tfm::shape<2, 3, 4>> x;
  auto s = tfm::sum<3>(x);  // ko: rank 3 has axes 0, 1, 2
  (void)s;
#else
  tfm::tensor<float, tfm::shape<2, 3, 4>> x;
  auto s = tfm::sum<2>(x);  // ok: the last axis
  (void)s;
#endif
}
