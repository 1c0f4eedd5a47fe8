// ko: quantizing a float (4, 64) into a block tensor (4, 96): the static shapes differ.
#include "typeformer/quant/tensor.hpp"

int main() {
  tfm::tensor<float, tfm::shape<4, 64>> x;
#if TFM_KO
  tfm::tensor<tfm::block_q4_0, tfm::shape<4, 96>> w(x);  // ko: 64 vs 96
#else
  tfm::tensor<tfm::block_q4_0, tfm::shape<4, 64>> w(x);  // ok
#endif
  (void)w;
}
