// ko: an elementwise expression one node deeper than TFM_MAX_FUSION_DEPTH. The message tells the
// user to call .eval() on a sub-expression.
#include "typeformer/backend/cpu/elementwise.hpp"

template <int D, class X>
auto chain(const X& x) {
  if constexpr (D == 1)
    return x * 2.0f;
  else
    return chain<D - 1>(x) + x;
}

int main() {
  tfm::tensor<float, tfm::shape<8>> x;
#if TFM_KO
  tfm::tensor<float, tfm::shape<8>> y = chain<TFM_MAX_FUSION_DEPTH + 1>(x);  // ko: one too deep
#else
  tfm::tensor<float, tfm::shape<8>> y = chain<TFM_MAX_FUSION_DEPTH>(x);  // ok: exactly the limit
  tfm::tensor<float, tfm::shape<8>> z = chain<TFM_MAX_FUSION_DEPTH>(x).eval() + x;  // and the fix
  (void)z;
#endif
  (void)y;
}
