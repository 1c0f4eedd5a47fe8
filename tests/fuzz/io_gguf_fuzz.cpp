// libFuzzer target: bytes -> tfm::io::gguf_file::from_bytes, then every value, every tensor's
// bytes, dequantization and a writer round trip (tests/fuzz/io_gguf_target.hpp).
// Build: see io_gguf.cmake (clang only, ASan + UBSan). Run e.g.
//   ./io_gguf_fuzz -max_total_time=60 corpus_dir/
// A good seed corpus is tests/data/io_gguf/python_writer.gguf.
#include "io_gguf_target.hpp"

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  (void)io_gguf_fuzz::run_one(data, size);
  return 0;
}
