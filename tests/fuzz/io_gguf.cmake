# libFuzzer target for the GGUF reader and writer (io/gguf.hpp) and the reference dequantizers.
# Include from tests/fuzz/CMakeLists.txt; needs clang (-fsanitize=fuzzer); links ASan + UBSan.
# Run e.g.  ./io_gguf_fuzz -max_total_time=60 corpus_dir/   (seed: tests/data/io_gguf/*.gguf)
if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  add_executable(io_gguf_fuzz ${CMAKE_CURRENT_LIST_DIR}/io_gguf_fuzz.cpp)
  target_link_libraries(io_gguf_fuzz PRIVATE typeformer::typeformer)
  target_include_directories(io_gguf_fuzz PRIVATE ${CMAKE_CURRENT_LIST_DIR})
  target_compile_options(io_gguf_fuzz PRIVATE -g -O1 -fsanitize=fuzzer,address,undefined
                                              -fno-sanitize-recover=undefined)
  target_link_options(io_gguf_fuzz PRIVATE -fsanitize=fuzzer,address,undefined)
endif()
