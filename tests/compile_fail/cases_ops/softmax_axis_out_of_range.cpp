// ko: log_softmax along axis 2 of a rank-2 tensor.
#include "typeformer/backend/cpu/elementwise.hpp"
#include "typeformer/ops/normalize.hpp"

int main() {
#if TFM_KO
  tfm::tensor<float, tfm::shape<2, 3>> x;
  auto y = tfm::log_softmax<2>(x);  // ko: rank 2 has axes 0 and 1
  (void)y;
#else
  tfm::tensor<float, tfm::shape<2, 3>> x;
  auto y = tfm::log_softmax<1>(x);  // ok
  (void)y;
#endif
}
