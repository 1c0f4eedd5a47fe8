// ko: the static inner extents of a matmul differ: A is (2, 3), B is (5, 7).
#include "typeformer/backend/cpu/elementwise.hpp"
#include "typeformer/ops/matmul.hpp"

int main() {
  tfm::tensor<float, tfm::shape<2, 3>> a;
#if TFM_KO
  tfm::tensor<float, tfm::shape<5, 7>> b;  // ko: 3 columns vs 5 rows
#else
  tfm::tensor<float, tfm::shape<3, 7>> b;  // ok
#endif
  auto c = tfm::matmul(a, b);
  (void)c;
}
