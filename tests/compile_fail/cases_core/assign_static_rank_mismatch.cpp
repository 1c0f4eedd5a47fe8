// ko: an expression of static rank 1, shape (4), assigned to a tensor of static shape (3, 4): a
// tensor takes the shape of what is assigned to it, so the ranks must agree (a view broadcasts).
#include "typeformer/backend/cpu/elementwise.hpp"

int main() {
#if TFM_KO
  tfm::tensor<float, tfm::shape<4>> a;  // ko: rank 1 into rank 2
#else
  tfm::tensor<float, tfm::shape<3, 4>> a;  // ok
#endif
  tfm::tensor<float, tfm::shape<3, 4>> c;
  c = a * 2.0f;
}
