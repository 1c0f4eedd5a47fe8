// ko: item() on a tensor whose static shape holds six elements (core/tensor.hpp).
#include "typeformer/core/tensor.hpp"

int main() {
#if TFM_KO
  tfm::tensor<float, tfm::shape<2, 3>> a;
  float v = a.item();  // ko: (2, 3) holds six elements
#else
  tfm::tensor<float, tfm::shape<1, 1>> a;
  float v = a.item();  // ok: exactly one element
#endif
  (void)v;
}
