// ko: uniform random numbers of an integer element type.
#include "typeformer/core/factory.hpp"

int main() {
#if TFM_KO
  auto t = tfm::rand_uniform<std::int32_t>(tfm::shape<4>{}, 1, 0, 10);  // ko: integers
  (void)t;
#else
  auto t = tfm::rand_uniform<double>(tfm::shape<4>{}, 1, 0, 10);  // ok
  (void)t;
#endif
}
