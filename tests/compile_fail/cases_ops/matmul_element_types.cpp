// ko: matmul of float and double operands.
#include "typeformer/backend/cpu/elementwise.hpp"
#include "typeformer/ops/matmul.hpp"

int main() {
#if TFM_KO
  tfm::tensor<float, tfm::shape<2, 3>> a;
  tfm::tensor<double, tfm::shape<3, 4>> b;  // ko: float x double
  auto c = tfm::matmul(a, b);
  (void)c;
#else
  tfm::tensor<float, tfm::shape<2, 3>> a;
  tfm::tensor<float, tfm::shape<3, 4>> b;  // ok
  auto c = tfm::matmul(a, b);
  (void)c;
#endif
}
