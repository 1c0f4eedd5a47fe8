# Driver of one compile-fail test (cmake -P); see tfm_compile_fail_test() in CMakeLists.txt.
# SPEC is a file that sets expect, first_error, max_errors, source and include_dirs.
# Without OTHER_CXX: builds TARGET in BINARY_DIR (CONFIG: its configuration). With OTHER_CXX:
# compiles `source` with that compiler (-std=c++20 -fsyntax-only -DTFM_KO=1 -I<include_dirs>).
# Succeeds iff the compilation fails and its output passes every check that is set:
#   expect       a regex matched against the whole output,
#   first_error  a regex matched against the first line that contains "error:",
#   max_errors   the most lines that may contain "error:".
cmake_minimum_required(VERSION 3.21)

include("${SPEC}")
if(OTHER_CXX)
  set(what "${source} compiled with ${OTHER_CXX}")
  set(inc_args)
  foreach(dir IN LISTS include_dirs)
    list(APPEND inc_args "-I${dir}")
  endforeach()
  execute_process(COMMAND "${OTHER_CXX}" -std=c++20 -fsyntax-only -fno-diagnostics-color
                          -DTFM_KO=1 ${inc_args} "${source}"
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
else()
  set(what "${TARGET}")
  set(config_args)
  if(CONFIG)
    set(config_args --config "${CONFIG}")
  endif()
  execute_process(COMMAND "${CMAKE_COMMAND}" --build "${BINARY_DIR}" --target "${TARGET}"
                          ${config_args}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
endif()
string(ASCII 27 esc)
string(REGEX REPLACE "${esc}\\[[0-9;]*[mK]" "" out "${out}")

if(rc EQUAL 0)
  message(FATAL_ERROR "${what} compiled, but it must not:\n${out}")
endif()
if(NOT expect STREQUAL "" AND NOT out MATCHES "${expect}")
  message(FATAL_ERROR "${what} failed to compile, but not with an error matching "
                      "\"${expect}\":\n${out}")
endif()
# The lines that contain "error:" (';' would split the list, so it is replaced first).
string(REPLACE ";" "," flat "${out}")
string(REGEX MATCHALL "[^\n]*error:[^\n]*" error_lines "${flat}")
list(LENGTH error_lines n_errors)
if(NOT first_error STREQUAL "")
  if(n_errors EQUAL 0)
    message(FATAL_ERROR "${what} failed to compile without a line that contains \"error:\":\n"
                        "${out}")
  endif()
  list(GET error_lines 0 first)
  if(NOT first MATCHES "${first_error}")
    message(FATAL_ERROR "${what}: the first error line does not match \"${first_error}\":\n"
                        "${first}\nWhole output:\n${out}")
  endif()
endif()
if(NOT max_errors STREQUAL "" AND n_errors GREATER max_errors)
  message(FATAL_ERROR "${what}: ${n_errors} lines contain \"error:\", at most ${max_errors} "
                      "expected:\n${out}")
endif()
message(STATUS "${what} failed to compile as expected (${n_errors} error lines)")
