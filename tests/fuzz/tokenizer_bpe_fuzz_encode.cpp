// libFuzzer entry point: byte-level BPE, target 'encode' (see tokenizer_bpe_targets.hpp).
// Build: clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -Iinclude -Itests/fuzz \
//        tests/fuzz/tokenizer_bpe_fuzz_encode.cpp -o fuzz_encode && ./fuzz_encode
//        -max_total_time=60 CORPUS_DIR
#include "tokenizer_bpe_targets.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return tfm_fuzz::fuzz_encode(data, size);
}
