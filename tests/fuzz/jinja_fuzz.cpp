// libFuzzer target: arbitrary bytes as a Jinja chat template (parse + render under limits).
// Build with clang (tests/fuzz/jinja.cmake) and run e.g.
//   ./jinja_fuzz -max_total_time=60 -dict=... corpus_dir/ tests/data/jinja/templates/
#include "jinja_fuzz_body.hpp"

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  jinja_fuzz::run_one(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
