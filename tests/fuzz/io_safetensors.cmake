# libFuzzer target for the safetensors reader (and writer, through the rewrite check).
# Include from tests/fuzz/CMakeLists.txt; needs clang (-fsanitize=fuzzer); links ASan + UBSan.
# Run e.g.  ./io_safetensors_fuzz -max_total_time=60 corpus_dir/ <src>/tests/data/io_safetensors/
# With GCC the same body runs as a seeded-mutation unit test (tests/unit/io_safetensors).
if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  add_executable(io_safetensors_fuzz ${CMAKE_CURRENT_LIST_DIR}/io_safetensors_fuzz.cpp)
  target_link_libraries(io_safetensors_fuzz PRIVATE typeformer::typeformer)
  target_include_directories(io_safetensors_fuzz PRIVATE ${CMAKE_CURRENT_LIST_DIR})
  target_compile_options(io_safetensors_fuzz PRIVATE -g -O1 -fsanitize=fuzzer,address,undefined
                                                     -fno-sanitize-recover=undefined)
  target_link_options(io_safetensors_fuzz PRIVATE -fsanitize=fuzzer,address,undefined)
endif()
