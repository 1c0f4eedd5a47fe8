# libFuzzer target for the Jinja chat-template interpreter (tokenizer/jinja.hpp).
# Include from tests/fuzz/CMakeLists.txt; needs clang (-fsanitize=fuzzer); links ASan + UBSan.
# Seed it with the published templates:  ./jinja_fuzz -max_total_time=60 corpus/ <src>/tests/data/jinja/templates
if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  add_executable(jinja_fuzz ${CMAKE_CURRENT_LIST_DIR}/jinja_fuzz.cpp)
  target_link_libraries(jinja_fuzz PRIVATE typeformer::typeformer)
  target_include_directories(jinja_fuzz PRIVATE ${CMAKE_CURRENT_LIST_DIR})
  target_compile_options(jinja_fuzz PRIVATE -g -O1 -fsanitize=fuzzer,address,undefined
                                            -fno-sanitize-recover=undefined)
  target_link_options(jinja_fuzz PRIVATE -fsanitize=fuzzer,address,undefined)
endif()
