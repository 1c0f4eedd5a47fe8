// Conan test_package: the smallest program that uses the packaged headers.
#include <cstdio>
#include <string>

#include <xsimd/xsimd.hpp>

#include "typeformer/config/error.hpp"
#include "typeformer/config/version.hpp"

int main() {
  try {
    tfm::fail(tfm::errc::value, "test_package: size ", -1, " is negative");
  } catch (const tfm::value_error& e) {
    if (std::string(e.what()) == "test_package: size -1 is negative") {
      std::printf("typeformer %s from Conan: ok (xsimd batch<float> has %d lanes)\n",
                  TFM_VERSION_STRING, static_cast<int>(xsimd::batch<float>::size));
      return 0;
    }
  }
  std::printf("typeformer %s from Conan: FAILED\n", TFM_VERSION_STRING);
  return 1;
}
