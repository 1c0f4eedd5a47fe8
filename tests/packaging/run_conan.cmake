# Conan packaging test (cmake -P): `conan create` of the recipe with its test_package, offline.
#
# ConanCenter is not needed: a profile marks xsimd as a platform requirement (the xsimd the main
# build found, version XSIMD_VERSION), so Conan takes it from the system instead of a remote.
# Everything happens in WORK_DIR: a private CONAN_HOME (the user's ~/.conan2 is left alone) and a
# copy of the recipe's files (Conan writes build folders next to test_package/).
# Skips (prints TFM_SKIP:) when the conan client is not installed.
# Inputs: SOURCE_DIR WORK_DIR XSIMD_VERSION
cmake_minimum_required(VERSION 3.21)

find_program(CONAN conan)
if(NOT CONAN)
  message("TFM_SKIP: the conan client is not installed (python3 -m pip install conan; "
          "scripts/setup does it); the Conan packaging test is skipped")
  return()
endif()
if(NOT XSIMD_VERSION)
  message(FATAL_ERROR "run_conan.cmake: -DXSIMD_VERSION=... is required")
endif()

file(REMOVE_RECURSE "${WORK_DIR}")
set(src "${WORK_DIR}/src")
file(MAKE_DIRECTORY "${src}")
file(COPY "${SOURCE_DIR}/conanfile.py" "${SOURCE_DIR}/CMakeLists.txt" "${SOURCE_DIR}/cmake"
          "${SOURCE_DIR}/include" "${SOURCE_DIR}/test_package" DESTINATION "${src}")
file(GLOB licenses "${SOURCE_DIR}/LICENSE*")
if(licenses)
  file(COPY ${licenses} DESTINATION "${src}")
endif()

set(profile "${WORK_DIR}/offline.profile")
file(WRITE "${profile}" "include(default)

[settings]
compiler.cppstd=20
build_type=Release

[platform_requires]
xsimd/${XSIMD_VERSION}

[conf]
tools.build:jobs=2
")

set(env "${CMAKE_COMMAND}" -E env "CONAN_HOME=${WORK_DIR}/conan-home")
function(conan what)
  list(JOIN ARGN " " shown)
  message(STATUS "[${what}] conan ${shown}")
  execute_process(COMMAND ${env} "${CONAN}" ${ARGN} WORKING_DIRECTORY "${src}"
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "[${what}] failed (${rc}):\n${out}")
  endif()
  set(last_output "${out}" PARENT_SCOPE)
endfunction()

conan(version --version)
message(STATUS "${last_output}")
conan(profile profile detect --force)
conan(create create . --build=missing --no-remote -pr:a "${profile}")
message(STATUS "${last_output}")
if(NOT last_output MATCHES "from Conan: ok")
  message(FATAL_ERROR "test_package did not report success")
endif()
