// ko: an Eigen map of a temporary tensor (it would dangle).
#include "typeformer/core/factory.hpp"
#include "typeformer/interop/eigen.hpp"

int main() {
#if TFM_KO
  auto m = tfm::as_eigen(tfm::zeros<float>(tfm::shape<2, 3>{}));  // ko: a temporary
  (void)m;
#else
  auto t = tfm::zeros<float>(tfm::shape<2, 3>{});
  auto m = tfm::as_eigen(t);  // ok: an lvalue
  (void)m;
#endif
}
