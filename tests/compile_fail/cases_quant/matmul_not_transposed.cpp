// ko: matmul(x, w) with block weights W (N, K): the blocks run along K, so x W^T is written
// matmul(x, transpose(w)).
#include "typeformer/ops/quant_matmul.hpp"

int main() {
  tfm::tensor<float, tfm::shape<3, 64>> x;
  tfm::tensor<tfm::block_q4_0, tfm::shape<8, 64>> w;
#if TFM_KO
  auto y = tfm::matmul(x, w);  // ko: w not transposed
#else
  auto y = tfm::matmul(x, tfm::transpose(w));  // ok
#endif
  (void)y;
}
