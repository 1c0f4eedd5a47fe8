# TfmHttp: the HTTP and JSON libraries of `tfm serve` as one INTERFACE target, tfm_http, and
# TFM_HAVE_HTTP (ON when both were found). Safe to include from several directories.
#   cpp-httplib: upstream's CMake package (httplib::httplib), else pkg-config `cpp-httplib`
#                (Debian's libcpp-httplib-dev: a shared library whose Cflags must be used).
#   nlohmann_json: its CMake package (nlohmann_json::nlohmann_json).
if(TARGET tfm_http)
  set(TFM_HAVE_HTTP ON)
  return()
endif()
set(TFM_HAVE_HTTP OFF)
find_package(nlohmann_json 3.2 QUIET)
set(_tfm_httplib_target "")
find_package(httplib CONFIG QUIET)
if(TARGET httplib::httplib)
  set(_tfm_httplib_target httplib::httplib)
else()
  find_package(PkgConfig QUIET)
  if(PKG_CONFIG_FOUND)
    pkg_check_modules(TFM_CPP_HTTPLIB QUIET IMPORTED_TARGET GLOBAL cpp-httplib)
    if(TARGET PkgConfig::TFM_CPP_HTTPLIB)
      set(_tfm_httplib_target PkgConfig::TFM_CPP_HTTPLIB)
    endif()
  endif()
endif()
if(_tfm_httplib_target AND TARGET nlohmann_json::nlohmann_json)
  find_package(Threads REQUIRED)
  add_library(tfm_http INTERFACE)
  target_link_libraries(tfm_http INTERFACE ${_tfm_httplib_target} nlohmann_json::nlohmann_json
                                           Threads::Threads)
  set(TFM_HAVE_HTTP ON)
else()
  get_property(_tfm_http_said GLOBAL PROPERTY TFM_HTTP_MISSING_REPORTED)
  if(NOT _tfm_http_said)
    set_property(GLOBAL PROPERTY TFM_HTTP_MISSING_REPORTED ON)
    message(STATUS "typeformer: cpp-httplib or nlohmann_json not found: `tfm serve` and its "
                   "tests are not built (Debian: apt-get install libcpp-httplib-dev "
                   "nlohmann-json3-dev)")
  endif()
endif()
