// libFuzzer entry point: byte-level BPE, target 'tiktoken' (see tokenizer_bpe_targets.hpp).
// Build: clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -Iinclude -Itests/fuzz \
//        tests/fuzz/tokenizer_bpe_fuzz_tiktoken.cpp -o fuzz_tiktoken && ./fuzz_tiktoken
//        -max_total_time=60 CORPUS_DIR
#include "tokenizer_bpe_targets.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return tfm_fuzz::fuzz_tiktoken(data, size);
}
