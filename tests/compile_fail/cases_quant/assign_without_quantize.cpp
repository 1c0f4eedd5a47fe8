// ko: a float tensor assigned to a block tensor: the quantization must be written out.
#include "typeformer/quant/tensor.hpp"

int main() {
  tfm::tensor<float, tfm::shape<4, 64>> x;
  tfm::tensor<tfm::block_q4_0, tfm::shape<4, 64>> w;
#if TFM_KO
  w = x;  // ko: no implicit quantization
#else
  w = tfm::quantize<tfm::block_q4_0>(x);  // ok
#endif
  (void)w;
}
