// ko: block weights take float activations; double ones must be cast first.
#include "typeformer/ops/quant_matmul.hpp"

int main() {
#if TFM_KO
  tfm::tensor<double, tfm::shape<3, 64>> x;  // ko: double
#else
  tfm::tensor<float, tfm::shape<3, 64>> x;  // ok
#endif
  tfm::tensor<tfm::block_q4_0, tfm::shape<8, 64>> w;
  auto y = tfm::matmul(x, tfm::transpose(w));
  (void)y;
}
