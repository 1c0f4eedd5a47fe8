# Packaging test driver (cmake -P). Builds and runs tests/packaging/consumer/main.cpp through one
# way of consuming typeformer, in a fresh work directory:
#   MODE=find_package       cmake --install the main build into WORK_DIR/prefix, then
#                           find_package(typeformer <version>) from there; also checks that a
#                           request for the next minor version is refused (version file).
#   MODE=add_subdirectory   add_subdirectory(<source tree>)
#   MODE=fetch_content_dir  FetchContent with SOURCE_DIR = the source tree
#   MODE=fetch_content_url  FetchContent with URL = file:// archive of the source tree
# Inputs: MODE SOURCE_DIR BINARY_DIR WORK_DIR GENERATOR CXX_COMPILER VERSION XSIMD_DIR
cmake_minimum_required(VERSION 3.21)

foreach(v MODE SOURCE_DIR BINARY_DIR WORK_DIR GENERATOR CXX_COMPILER VERSION)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "run_consumer.cmake: -D${v}=... is required")
  endif()
endforeach()

function(run)  # run(<what> COMMAND ...): echo, run, fail with its output on a non-zero exit
  cmake_parse_arguments(R "" "" "COMMAND" ${ARGN})
  list(JOIN R_COMMAND " " shown)
  message(STATUS "[${ARGV0}] ${shown}")
  execute_process(COMMAND ${R_COMMAND} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "[${ARGV0}] failed (${rc}):\n${out}")
  endif()
  set(last_output "${out}" PARENT_SCOPE)
endfunction()

file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

set(common -G "${GENERATOR}" "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}" -DCMAKE_BUILD_TYPE=Release
    "-DTFM_EXPECTED_VERSION=${VERSION}")
if(XSIMD_DIR)
  list(APPEND common "-Dxsimd_DIR=${XSIMD_DIR}")
endif()
set(here "${CMAKE_CURRENT_LIST_DIR}")

if(MODE STREQUAL "find_package")
  set(prefix "${WORK_DIR}/prefix")
  run(install COMMAND "${CMAKE_COMMAND}" --install "${BINARY_DIR}" --prefix "${prefix}"
      --component typeformer)
  foreach(f include/typeformer/config/version.hpp share/cmake/typeformer/typeformerConfig.cmake
            share/cmake/typeformer/typeformerConfigVersion.cmake)
    if(NOT EXISTS "${prefix}/${f}")
      message(FATAL_ERROR "cmake --install did not install ${f}")
    endif()
  endforeach()
  set(project_dir "${here}/find_package")
  list(APPEND common "-DCMAKE_PREFIX_PATH=${prefix}" -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON)

  # The version file must refuse the next minor version while the major version is 0, and the
  # next major version after that.
  string(REPLACE "." ";" parts "${VERSION}")
  list(GET parts 0 major)
  list(GET parts 1 minor)
  if(major EQUAL 0)
    math(EXPR minor "${minor} + 1")
    set(too_new "${major}.${minor}")
  else()
    math(EXPR major "${major} + 1")
    set(too_new "${major}.0")
  endif()
  message(STATUS "[version] asking for typeformer ${too_new} must fail")
  execute_process(COMMAND "${CMAKE_COMMAND}" -S "${project_dir}" -B "${WORK_DIR}/too_new"
                          ${common} "-DTFM_EXPECTED_VERSION=${too_new}"
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(rc EQUAL 0 OR NOT out MATCHES "compatible with requested version")
    message(FATAL_ERROR "find_package(typeformer ${too_new}) should fail against ${VERSION}:\n${out}")
  endif()
elseif(MODE STREQUAL "add_subdirectory")
  set(project_dir "${here}/add_subdirectory")
  list(APPEND common "-DTFM_SOURCE_DIR=${SOURCE_DIR}")
elseif(MODE STREQUAL "fetch_content_dir")
  set(project_dir "${here}/fetch_content")
  list(APPEND common "-DTFM_SOURCE_DIR=${SOURCE_DIR}")
elseif(MODE STREQUAL "fetch_content_url")
  # A release-style archive: one top folder holding what a source release ships.
  set(stage "${WORK_DIR}/stage/typeformer-${VERSION}")
  file(MAKE_DIRECTORY "${stage}")
  file(COPY "${SOURCE_DIR}/CMakeLists.txt" "${SOURCE_DIR}/cmake" "${SOURCE_DIR}/include"
       DESTINATION "${stage}")
  set(archive "${WORK_DIR}/typeformer-${VERSION}.tar.gz")
  execute_process(COMMAND "${CMAKE_COMMAND}" -E tar czf "${archive}" "typeformer-${VERSION}"
                  WORKING_DIRECTORY "${WORK_DIR}/stage" RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "could not create ${archive}")
  endif()
  file(SHA256 "${archive}" sha)
  message(STATUS "[archive] ${archive} sha256 ${sha}")
  set(project_dir "${here}/fetch_content")
  list(APPEND common "-DTFM_FETCH_URL=file://${archive}")
else()
  message(FATAL_ERROR "run_consumer.cmake: unknown MODE '${MODE}'")
endif()

run(configure COMMAND "${CMAKE_COMMAND}" -S "${project_dir}" -B "${WORK_DIR}/build" ${common})
if(MODE STREQUAL "find_package" AND NOT last_output MATCHES "found typeformer [^\n]* in ${WORK_DIR}/prefix")
  message(FATAL_ERROR "find_package did not pick the installed copy:\n${last_output}")
endif()
run(build COMMAND "${CMAKE_COMMAND}" --build "${WORK_DIR}/build" --config Release)
find_program(consumer NAMES consumer PATHS "${WORK_DIR}/build" "${WORK_DIR}/build/Release"
             NO_DEFAULT_PATH REQUIRED)
run(run COMMAND "${consumer}")
message(STATUS "${last_output}")
if(NOT last_output MATCHES "consumer: ok")
  message(FATAL_ERROR "the consumer did not report success")
endif()
