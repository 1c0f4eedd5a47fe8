// ko: layer_norm of a rank-0 tensor.
#include "typeformer/backend/cpu/elementwise.hpp"
#include "typeformer/ops/normalize.hpp"

int main() {
#if TFM_KO
  tfm::tensor<float, tfm::shape<>> x;  // ko: a scalar has no axis to normalise
  auto y = tfm::layer_norm(x, tfm::none, tfm::none);
  (void)y;
#else
  tfm::tensor<float, tfm::shape<1>> x;  // ok: rank 1
  auto y = tfm::layer_norm(x, tfm::none, tfm::none);
  (void)y;
#endif
}
