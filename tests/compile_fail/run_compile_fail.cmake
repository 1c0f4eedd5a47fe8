# Driver of one compile-fail test (cmake -P); see tfm_compile_fail_test() in CMakeLists.txt.
# Builds TARGET in BINARY_DIR; succeeds iff the build fails and its output matches the regex in
# EXPECT_FILE.
cmake_minimum_required(VERSION 3.21)

file(READ "${EXPECT_FILE}" expect)
set(config_args)
if(CONFIG)
  set(config_args --config "${CONFIG}")
endif()
execute_process(COMMAND "${CMAKE_COMMAND}" --build "${BINARY_DIR}" --target "${TARGET}" ${config_args}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
string(ASCII 27 esc)
string(REGEX REPLACE "${esc}\\[[0-9;]*[mK]" "" out "${out}")

if(rc EQUAL 0)
  message(FATAL_ERROR "${TARGET} compiled, but it must not (expected an error matching "
                      "\"${expect}\"):\n${out}")
endif()
if(NOT out MATCHES "${expect}")
  message(FATAL_ERROR "${TARGET} failed to compile, but not with an error matching "
                      "\"${expect}\":\n${out}")
endif()
message(STATUS "${TARGET} failed to compile as expected; the output matches \"${expect}\"")
