// ko: matmul of integer operands.
#include "typeformer/backend/cpu/elementwise.hpp"
#include "typeformer/ops/matmul.hpp"

int main() {
#if TFM_KO
  tfm::tensor<std::int32_t, tfm::shape<2, 3>> a;
  tfm::tensor<std::int32_t, tfm::shape<3, 4>> b;  // ko: integer operands
  auto c = tfm::matmul(a, b);
  (void)c;
#else
  tfm::tensor<double, tfm::shape<2, 3>> a;
  tfm::tensor<double, tfm::shape<3, 4>> b;  // ok
  auto c = tfm::matmul(a, b);
  (void)c;
#endif
}
