// ko: softmax of an integer tensor.
#include "typeformer/backend/cpu/elementwise.hpp"
#include "typeformer/ops/normalize.hpp"

int main() {
#if TFM_KO
  tfm::tensor<std::int32_t, tfm::shape<2, 3>> x;  // ko: integer logits
  auto y = tfm::softmax(x);
  (void)y;
#else
  tfm::tensor<float, tfm::shape<2, 3>> x;  // ok
  auto y = tfm::softmax(x);
  (void)y;
#endif
}
