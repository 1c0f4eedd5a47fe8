// ko: a 2-D gamma for layer_norm.
#include "typeformer/backend/cpu/elementwise.hpp"
#include "typeformer/ops/normalize.hpp"

int main() {
#if TFM_KO
  tfm::tensor<float, tfm::shape<4, 8>> x;
  tfm::tensor<float, tfm::shape<1, 8>> g;  // ko: gamma must be 1-D
  auto y = tfm::layer_norm(x, g, tfm::none);
  (void)y;
#else
  tfm::tensor<float, tfm::shape<4, 8>> x;
  tfm::tensor<float, tfm::shape<8>> g;  // ok
  auto y = tfm::layer_norm(x, g, tfm::none);
  (void)y;
#endif
}
