// ko: an expression of static shape (5, 4) assigned into a view of static shape (3, 4): axis 1
// from the right differs and neither extent is 1.
#include "typeformer/backend/cpu/elementwise.hpp"

int main() {
  tfm::tensor<float, tfm::shape<3, 4>> a;
#if TFM_KO
  tfm::tensor<float, tfm::shape<5, 4>> b;  // ko: 5 rows into 3
#else
  tfm::tensor<float, tfm::shape<1, 4>> b;  // ok: broadcasts over the rows
#endif
  a.view() = b * 2.0f;
}
