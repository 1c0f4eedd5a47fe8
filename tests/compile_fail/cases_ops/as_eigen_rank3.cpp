// ko: an Eigen map of a rank-3 tensor.
#include "typeformer/core/tensor.hpp"
#include "typeformer/interop/eigen.hpp"

int main() {
#if TFM_KO
  tfm::tensor<float, tfm::shape<2, 3, 4>> t;  // ko: rank 3
#else
  tfm::tensor<float, tfm::shape<2, 3>> t;  // ok: rank 2
#endif
  auto m = tfm::as_eigen(t);
  (void)m;
}
