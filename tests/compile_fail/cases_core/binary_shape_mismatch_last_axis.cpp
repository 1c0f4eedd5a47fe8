// ko: a binary elementwise op on static shapes (4, 3) and (4, 4): the last axis (0 from the
// right) differs and neither extent is 1. The example of docs/expressions.md.
#include "typeformer/backend/cpu/elementwise.hpp"

int main() {
  tfm::tensor<float, tfm::shape<4, 3>> a;
#if TFM_KO
  tfm::tensor<float, tfm::shape<4, 4>> b;  // ko: 3 columns vs 4
#else
  tfm::tensor<float, tfm::shape<4, 1>> b;  // ok: broadcasts over the columns
#endif
  auto c = (a + b).eval();
  (void)c;
}
