// ko: a static K of 30 is not a whole number of Q4_0 blocks (32 elements).
#include "typeformer/quant/tensor.hpp"

int main() {
#if TFM_KO
  tfm::tensor<tfm::block_q4_0, tfm::shape<8, 30>> w;  // ko: 30 % 32 != 0
#else
  tfm::tensor<tfm::block_q4_0, tfm::shape<8, 32>> w;  // ok
#endif
  (void)w;
}
