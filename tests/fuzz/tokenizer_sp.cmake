# libFuzzer targets for the WordPiece / SentencePiece / chat-template tokenizers.
# Include from tests/fuzz/CMakeLists.txt; needs clang (-fsanitize=fuzzer). Each target links
# ASan + UBSan. Run e.g.  ./tokenizer_sp_model_fuzz -max_total_time=60 corpus_dir/
if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  foreach(_t tokenizer_sp_model_fuzz tokenizer_sp_vocab_fuzz tokenizer_sp_encode_fuzz)
    add_executable(${_t} ${CMAKE_CURRENT_LIST_DIR}/${_t}.cpp)
    target_link_libraries(${_t} PRIVATE typeformer::typeformer)
    target_compile_options(${_t} PRIVATE -g -O1 -fsanitize=fuzzer,address,undefined
                                         -fno-sanitize-recover=undefined)
    target_link_options(${_t} PRIVATE -fsanitize=fuzzer,address,undefined)
  endforeach()
endif()
