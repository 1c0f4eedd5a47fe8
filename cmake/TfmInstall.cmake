# cmake/TfmInstall.cmake: install rules and the CMake package files for typeformer.
#
# Installs
#   <prefix>/include/typeformer/...                    every public header
#   <prefix>/share/cmake/typeformer/typeformerConfig.cmake, typeformerConfigVersion.cmake,
#                                   typeformerTargets.cmake
# so that a consumer writes
#   find_package(typeformer 0.1 REQUIRED)
#   target_link_libraries(app PRIVATE typeformer::typeformer)
#
# The exported target is the INTERFACE target of the top-level CMakeLists.txt: C++20, the include
# directory, xsimd, OpenMP::OpenMP_CXX when this build used OpenMP, and the CUDA libraries when it
# was configured with TFM_WITH_CUDA. The config file finds those same dependencies again.
#
# The library is header-only, so the package files go to share/ (architecture independent) and the
# version file is written with ARCH_INDEPENDENT: a 32-bit consumer may use a 64-bit install.
# Version compatibility: see docs/packaging.md ("Version compatibility").
include_guard(GLOBAL)
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(TFM_INSTALL_CMAKEDIR "${CMAKE_INSTALL_DATADIR}/cmake/typeformer"
    CACHE STRING "Where typeformerConfig.cmake is installed, relative to the prefix")

# What the exported target links; the config file must find exactly these again.
set(TFM_CONFIG_USES_OPENMP OFF)
if(TFM_WITH_OPENMP AND OpenMP_CXX_FOUND)
  set(TFM_CONFIG_USES_OPENMP ON)
endif()
set(TFM_CONFIG_USES_CUDA OFF)
if(TFM_WITH_CUDA)
  set(TFM_CONFIG_USES_CUDA ON)
endif()

# Semantic versioning: while the major version is 0 every minor release may break the API, so a
# request for 0.1 accepts 0.1.x only. From 1.0 on, any newer release of the same major version.
if(PROJECT_VERSION_MAJOR EQUAL 0)
  set(TFM_VERSION_COMPATIBILITY SameMinorVersion)
else()
  set(TFM_VERSION_COMPATIBILITY SameMajorVersion)
endif()

# Everything is in the install component "typeformer" (the packaging tests install only it).
install(DIRECTORY "${PROJECT_SOURCE_DIR}/include/typeformer"
        DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}"
        COMPONENT typeformer
        FILES_MATCHING PATTERN "*.hpp" PATTERN "*.h" PATTERN "*.cuh" PATTERN "*.inl")

install(TARGETS typeformer typeformer_native EXPORT typeformerTargets COMPONENT typeformer)
install(EXPORT typeformerTargets
        NAMESPACE typeformer::
        DESTINATION "${TFM_INSTALL_CMAKEDIR}"
        COMPONENT typeformer)

configure_package_config_file(
  "${CMAKE_CURRENT_LIST_DIR}/typeformerConfig.cmake.in"
  "${PROJECT_BINARY_DIR}/typeformerConfig.cmake"
  INSTALL_DESTINATION "${TFM_INSTALL_CMAKEDIR}")
write_basic_package_version_file(
  "${PROJECT_BINARY_DIR}/typeformerConfigVersion.cmake"
  VERSION "${PROJECT_VERSION}"
  COMPATIBILITY ${TFM_VERSION_COMPATIBILITY}
  ARCH_INDEPENDENT)
install(FILES "${PROJECT_BINARY_DIR}/typeformerConfig.cmake"
              "${CMAKE_CURRENT_LIST_DIR}/TfmXsimd.cmake"
              "${PROJECT_BINARY_DIR}/typeformerConfigVersion.cmake"
        DESTINATION "${TFM_INSTALL_CMAKEDIR}"
        COMPONENT typeformer)
