// ko: x (3, 64) times W^T with W (8, 96): the inner extents 64 and 96 differ.
#include "typeformer/ops/quant_matmul.hpp"

int main() {
  tfm::tensor<float, tfm::shape<3, 64>> x;
#if TFM_KO
  tfm::tensor<tfm::block_q4_0, tfm::shape<8, 96>> w;  // ko: K = 96 vs 64
#else
  tfm::tensor<tfm::block_q4_0, tfm::shape<8, 64>> w;  // ok
#endif
  auto y = tfm::matmul(x, tfm::transpose(w));
  (void)y;
}
