// ko: a 2-D weight for rms_norm.
#include "typeformer/backend/cpu/elementwise.hpp"
#include "typeformer/ops/normalize.hpp"

int main() {
#if TFM_KO
  tfm::tensor<float, tfm::shape<4, 8>> x;
  tfm::tensor<float, tfm::shape<1, 8>> w;  // ko: the weight must be 1-D
  auto y = tfm::rms_norm(x, w);
  (void)y;
#else
  tfm::tensor<float, tfm::shape<4, 8>> x;
  tfm::tensor<float, tfm::shape<8>> w;  // ok
  auto y = tfm::rms_norm(x, w);
  (void)y;
#endif
}
