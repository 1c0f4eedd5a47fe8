// ko: a rank-2 expression assigned into a rank-1 view.
#include "typeformer/backend/cpu/elementwise.hpp"

int main() {
  tfm::tensor<float, tfm::shape<4>> row;
#if TFM_KO
  tfm::tensor<float, tfm::shape<3, 4>> a;  // ko: rank 2 into rank 1
#else
  tfm::tensor<float, tfm::shape<4>> a;  // ok
#endif
  row.view() = a + 1.0f;
}
