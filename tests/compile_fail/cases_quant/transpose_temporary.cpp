// ko: transpose of a temporary block tensor would leave a dangling view.
#include "typeformer/quant/tensor.hpp"

int main() {
  tfm::tensor<float, tfm::shape<4, 64>> x;
#if TFM_KO
  auto wt = tfm::transpose(tfm::quantize<tfm::block_q8_0>(x));  // ko: temporary
#else
  auto w = tfm::quantize<tfm::block_q8_0>(x);
  auto wt = tfm::transpose(w);  // ok
#endif
  (void)wt;
}
