# Checks (cmake -P, -DSOURCE_DIR=...) that the version in CMakeLists.txt, in
# include/typeformer/config/version.hpp and in conanfile.py is the same.
cmake_minimum_required(VERSION 3.21)

file(READ "${SOURCE_DIR}/CMakeLists.txt" cml)
if(NOT cml MATCHES "project\\(typeformer[ \t\r\n]+VERSION[ \t\r\n]+([0-9]+\\.[0-9]+\\.[0-9]+)")
  message(FATAL_ERROR "no project(typeformer VERSION x.y.z) in CMakeLists.txt")
endif()
set(cmake_version "${CMAKE_MATCH_1}")

file(READ "${SOURCE_DIR}/include/typeformer/config/version.hpp" hpp)
foreach(part MAJOR MINOR PATCH)
  if(NOT hpp MATCHES "#define TFM_VERSION_${part} ([0-9]+)")
    message(FATAL_ERROR "no TFM_VERSION_${part} in version.hpp")
  endif()
  set(${part} "${CMAKE_MATCH_1}")
endforeach()
if(NOT hpp MATCHES "#define TFM_VERSION_STRING \"([^\"]*)\"")
  message(FATAL_ERROR "no TFM_VERSION_STRING in version.hpp")
endif()
set(header_string "${CMAKE_MATCH_1}")
set(header_version "${MAJOR}.${MINOR}.${PATCH}")

file(READ "${SOURCE_DIR}/conanfile.py" py)
if(NOT py MATCHES "\n[ \t]+version[ \t]*=[ \t]*\"([^\"]*)\"")
  message(FATAL_ERROR "no version = \"x.y.z\" in conanfile.py")
endif()
set(conan_version "${CMAKE_MATCH_1}")

message(STATUS "CMakeLists.txt ${cmake_version}; version.hpp ${header_version} "
               "(string \"${header_string}\"); conanfile.py ${conan_version}")
if(NOT cmake_version STREQUAL header_version OR NOT cmake_version STREQUAL header_string
   OR NOT cmake_version STREQUAL conan_version)
  message(FATAL_ERROR "the versions disagree; change all three together")
endif()
