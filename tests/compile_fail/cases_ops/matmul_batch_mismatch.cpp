// ko: the static batch axes of a matmul cannot broadcast: A is (2, 3, 4), B is (5, 4, 6); the
// batch extents 2 and 5 differ (axis 2 from the right) and neither is 1.
#include "typeformer/backend/cpu/elementwise.hpp"
#include "typeformer/ops/matmul.hpp"

int main() {
  tfm::tensor<float, tfm::shape<2, 3, 4>> a;
#if TFM_KO
  tfm::tensor<float, tfm::shape<5, 4, 6>> b;  // ko: 2 batches vs 5
#else
  tfm::tensor<float, tfm::shape<1, 4, 6>> b;  // ok: B broadcasts over A's batch
#endif
  auto c = tfm::matmul(a, b);
  (void)c;
}
