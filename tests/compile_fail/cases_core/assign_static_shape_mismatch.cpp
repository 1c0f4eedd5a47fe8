// ko: an expression of static shape (4, 4) assigned to a tensor of static shape (3, 4).
#include "typeformer/backend/cpu/elementwise.hpp"

int main() {
  tfm::tensor<float, tfm::shape<4, 4>> a;
#if TFM_KO
  tfm::tensor<float, tfm::shape<3, 4>> c;  // ko: 3 rows, the expression has 4
#else
  tfm::tensor<float, tfm::shape<4, 4>> c;  // ok
#endif
  c = a * 2.0f;
}
