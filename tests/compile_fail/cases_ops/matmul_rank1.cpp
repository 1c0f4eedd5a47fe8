// ko: matmul of a rank-1 tensor.
#include "typeformer/backend/cpu/elementwise.hpp"
#include "typeformer/ops/matmul.hpp"

int main() {
#if TFM_KO
  tfm::tensor<float, tfm::shape<3>> v;  // ko: rank 1
  tfm::tensor<float, tfm::shape<3, 4>> w;
  auto y = tfm::matmul(v, w);
  (void)y;
#else
  tfm::tensor<float, tfm::shape<1, 3>> v;  // ok: a row vector as a 1x3 matrix
  tfm::tensor<float, tfm::shape<3, 4>> w;
  auto y = tfm::matmul(v, w);
  (void)y;
#endif
}
