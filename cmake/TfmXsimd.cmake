# cmake/TfmXsimd.cmake: include right after find_package(xsimd). Used by the top-level
# CMakeLists.txt and by the installed typeformerConfig.cmake.
#
# Debian's libxsimd-dev (8.1.0-7 in Debian 12, 13.2.0 in Debian 13) exports the target xsimd with
# INTERFACE_LINK_LIBRARIES "xtl". Debian 12's package neither depends on xtl nor looks for it, so
# the bare name ends up as -lxtl on every link line and linking fails. xtl is header-only and only
# serves xsimd's optional xtl::xcomplex support, which typeformer does not use: when there is no
# xtl target, look for xtl, and failing that define an empty stand-in in this directory scope
# (the scope where xsimd was found, where CMake resolves xsimd's link items).
if(TARGET xsimd AND NOT TARGET xtl)
  get_target_property(_tfm_xsimd_links xsimd INTERFACE_LINK_LIBRARIES)
  if("xtl" IN_LIST _tfm_xsimd_links)
    find_package(xtl QUIET CONFIG)
    if(NOT TARGET xtl)
      add_library(xtl INTERFACE IMPORTED)
    endif()
  endif()
  unset(_tfm_xsimd_links)
endif()
