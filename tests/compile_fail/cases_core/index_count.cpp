// ko: element access with one index on a rank-2 tensor.
#include "typeformer/core/tensor.hpp"

int main() {
  tfm::tensor<float, tfm::shape<3, 5>> a;
#if TFM_KO
  float v = a(2);  // ko: rank 2 needs two indices
#else
  float v = a(2, 4);  // ok
#endif
  (void)v;
}
