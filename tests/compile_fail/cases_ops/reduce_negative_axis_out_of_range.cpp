// ko: a reduction along axis -3 of a rank-2 tensor.
#include "typeformer/backend/cpu/elementwise.hpp"
#include "typeformer/backend/cpu/reduce.hpp"

int main() {
#if TFM_KO
  tfm::tensor<float, tfm::shape<2, 3>> x;
  auto m = tfm::argmax<-3>(x, tfm::keepdims);  // ko: rank 2 has axes -2, -1
  (void)m;
#else
  tfm::tensor<float, tfm::shape<2, 3>> x;
  auto m = tfm::argmax<-2>(x, tfm::keepdims);  // ok: -2 is axis 0
  (void)m;
#endif
}
