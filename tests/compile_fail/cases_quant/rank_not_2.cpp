// ko: block tensors are matrices (N, K); rank 3 is refused by name.
#include "typeformer/quant/tensor.hpp"

int main() {
#if TFM_KO
  tfm::tensor<tfm::block_q8_0, tfm::shape<2, 4, 32>> w;  // ko: rank 3
#else
  tfm::tensor<tfm::block_q8_0, tfm::shape<8, 32>> w;  // ok
#endif
  (void)w;
}
