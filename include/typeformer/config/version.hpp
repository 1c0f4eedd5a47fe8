// typeformer/config/version.hpp: the library version (kept in step with CMakeLists.txt and
// conanfile.py; tests/packaging checks that they agree).
#pragma once

#define TFM_VERSION_MAJOR 0
#define TFM_VERSION_MINOR 1
#define TFM_VERSION_PATCH 0
#define TFM_VERSION_STRING "0.1.0"
