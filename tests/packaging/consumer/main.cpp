// A minimal program that uses typeformer the way a downstream project does. It is built by every
// packaging test (find_package, add_subdirectory, FetchContent, Conan test_package) and checks that
// the headers, the version and the transitive xsimd dependency reach the consumer.
#include <cstdio>
#include <cstring>
#include <string>

#include <xsimd/xsimd.hpp>

#include "typeformer/config/error.hpp"
#include "typeformer/config/version.hpp"

#ifndef TFM_EXPECTED_VERSION
#error "the consumer project must define TFM_EXPECTED_VERSION (the version it asked for)"
#endif

int main() {
  int failures = 0;
  if (std::strcmp(TFM_VERSION_STRING, TFM_EXPECTED_VERSION) != 0) {
    std::printf("version mismatch: headers say %s, the package said %s\n", TFM_VERSION_STRING,
                TFM_EXPECTED_VERSION);
    ++failures;
  }
  try {
    tfm::fail(tfm::errc::shape, "cannot add shape<3, 4> to shape<4, 4>: axis ", 0, " differs");
    std::printf("tfm::fail returned\n");
    ++failures;
  } catch (const tfm::shape_error& e) {
    if (std::string(e.what()) != "cannot add shape<3, 4> to shape<4, 4>: axis 0 differs") {
      std::printf("unexpected message: %s\n", e.what());
      ++failures;
    }
  }
  if (xsimd::batch<float>::size < 1) ++failures;
  std::printf("typeformer %s consumer: %s\n", TFM_VERSION_STRING, failures ? "FAILED" : "ok");
  return failures == 0 ? 0 : 1;
}
