// ko: normal random numbers of an integer element type.
#include "typeformer/core/factory.hpp"

int main() {
#if TFM_KO
  auto t = tfm::randn<std::int32_t>(tfm::shape<4>{}, 1);  // ko: integer elements
  (void)t;
#else
  auto t = tfm::randn<float>(tfm::shape<4>{}, 1);  // ok
  (void)t;
#endif
}
