# Conan 2 recipe for typeformer, a header-only library.
#   conan create . --build=missing            (ConanCenter reachable: xsimd comes from there)
#   conan create . --build=missing -pr:a tests/packaging/... (offline: see docs/packaging.md)
# The version is kept in step with CMakeLists.txt and include/typeformer/config/version.hpp
# (tests/packaging/check_versions.cmake checks it).
import os

from conan import ConanFile
from conan.tools.build import check_min_cppstd
from conan.tools.cmake import cmake_layout
from conan.tools.files import copy

required_conan_version = ">=2.0"


class TypeformerConan(ConanFile):
    name = "typeformer"
    version = "0.1.0"
    description = "Header-only C++20 tensors and transformers with shapes in types"
    topics = ("tensor", "transformer", "autodiff", "header-only", "simd")
    package_type = "header-library"
    settings = "os", "arch", "compiler", "build_type"
    options = {"with_openmp": [True, False]}
    default_options = {"with_openmp": True}
    exports_sources = "include/*", "CMakeLists.txt", "cmake/*", "LICENSE*"
    no_copy_source = True

    def layout(self):
        cmake_layout(self)

    def requirements(self):
        # xsimd 8.1 (Debian 12) up to the current 13.x are supported (see docs/packaging.md).
        self.requires("xsimd/[>=8.1.0 <14]")

    def package_id(self):
        # Header-only: one package for every configuration.
        self.info.clear()

    def validate(self):
        if self.settings.get_safe("compiler.cppstd"):
            check_min_cppstd(self, 20)

    def package(self):
        copy(self, "LICENSE*", self.source_folder, os.path.join(self.package_folder, "licenses"))
        copy(self, "*", os.path.join(self.source_folder, "include"),
             os.path.join(self.package_folder, "include"))

    def package_info(self):
        # Two targets, as with CMake: typeformer::typeformer (portable) and typeformer::native
        # (the same plus the host's instruction set). Components, so that the portable target
        # does not carry -march=native; the aggregate of both is typeformer::typeformer_all.
        self.cpp_info.set_property("cmake_file_name", "typeformer")
        self.cpp_info.set_property("cmake_target_name", "typeformer::typeformer_all")
        self.cpp_info.bindirs = []
        self.cpp_info.libdirs = []
        core = self.cpp_info.components["core"]
        core.set_property("cmake_target_name", "typeformer::typeformer")
        core.bindirs = []
        core.libdirs = []
        # A platform requirement (xsimd from the system, see docs/packaging.md) is no graph node
        # that a component could require; its headers come from the system's include path.
        try:
            xsimd_is_package = self.dependencies.host["xsimd"].package_folder is not None
        except KeyError:
            xsimd_is_package = False
        if xsimd_is_package:
            core.requires = ["xsimd::xsimd"]
        compiler = str(self.settings.compiler)
        if not self.options.with_openmp:
            core.defines = ["TFM_WITH_OPENMP=0"]
        elif compiler in ("gcc", "clang", "apple-clang"):
            # The same as CMake's OpenMP::OpenMP_CXX with GCC, and with clang + libomp-dev.
            core.cxxflags = ["-fopenmp"]
            core.sharedlinkflags = ["-fopenmp"]
            core.exelinkflags = ["-fopenmp"]
        elif compiler == "msvc":
            core.cxxflags = ["/openmp"]
        native = self.cpp_info.components["native"]
        native.set_property("cmake_target_name", "typeformer::native")
        native.bindirs = []
        native.libdirs = []
        native.requires = ["core"]
        if compiler in ("gcc", "clang", "apple-clang", "intel-cc"):
            native.cxxflags = ["-march=native"]
        elif compiler == "msvc":
            native.cxxflags = ["/arch:AVX2"]
