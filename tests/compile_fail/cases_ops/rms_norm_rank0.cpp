// ko: rms_norm of a rank-0 tensor.
#include "typeformer/backend/cpu/elementwise.hpp"
#include "typeformer/ops/normalize.hpp"

int main() {
#if TFM_KO
  tfm::tensor<double, tfm::shape<>> x;  // ko: rank 0
  auto y = tfm::rms_norm(x, tfm::none);
  (void)y;
#else
  tfm::tensor<double, tfm::shape<1>> x;  // ok: rank 1
  auto y = tfm::rms_norm(x, tfm::none);
  (void)y;
#endif
}
