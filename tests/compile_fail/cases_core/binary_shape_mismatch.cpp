// ko: a binary elementwise op on static shapes (3, 4) and (5, 4): axis 1 from the right differs
// and neither extent is 1.
#include "typeformer/backend/cpu/elementwise.hpp"

int main() {
  tfm::tensor<float, tfm::shape<3, 4>> a;
#if TFM_KO
  tfm::tensor<float, tfm::shape<5, 4>> b;  // ko: 3 rows vs 5 rows
#else
  tfm::tensor<float, tfm::shape<1, 4>> b;  // ok: broadcasts over the rows
#endif
  auto c = (a + b).eval();
  (void)c;
}
