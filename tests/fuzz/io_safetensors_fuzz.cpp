// libFuzzer target: bytes -> tfm::io::safetensors::file::from_bytes, then every tensor viewed,
// copied, rewritten and parsed again (contract: tests/fuzz/io_safetensors_target.hpp).
// Build: clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -I include -I tests/fuzz
//        tests/fuzz/io_safetensors_fuzz.cpp
// Run:   ./io_safetensors_fuzz -max_total_time=60 corpus_dir/ tests/data/io_safetensors/
#include "io_safetensors_target.hpp"

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (!tfm_fuzz::io_safetensors_fuzz_one(data, size)) __builtin_trap();
  return 0;
}
