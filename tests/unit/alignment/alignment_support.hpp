// tests/unit/alignment/alignment_support.hpp
//
// Helpers of the alignment tests: the numpy fixture (tests/data/alignment/alignment_cases.txt,
// written by gen_alignment.py from the papers' formulas), tensors and vars built from its
// arrays, and a relative-or-absolute closeness check that prints both numbers.
#pragma once

#include <doctest/doctest.h>
#include <tfm_test.hpp>
#include <typeformer/autodiff/variable.hpp>
// Vars built from tensors assign through the cpu backend's evaluate() (see gc_support.hpp).
#include <typeformer/backend/cpu/elementwise.hpp>
#include <typeformer/core/tensor.hpp>

#include <cmath>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace al {

using tfm::index_t;
using S1 = tfm::dyn_shape<1>;
using S2 = tfm::dyn_shape<2>;

/// The fixture's arrays by name (read once).
inline const std::map<std::string, std::vector<double>>& fixture() {
  static const auto data = tfm_test::read_named_arrays(std::string(TFM_SOURCE_DIR) +
                                                       "/tests/data/alignment/alignment_cases.txt");
  return data;
}

inline const std::vector<double>& arr(const std::string& name) {
  auto it = fixture().find(name);
  REQUIRE_MESSAGE(it != fixture().end(), "fixture array missing: ", name);
  return it->second;
}

template <class T>
std::vector<T> cast_vec(const std::vector<double>& v) {
  return std::vector<T>(v.begin(), v.end());
}

template <class T>
tfm::tensor<T, S1> t1(const std::vector<double>& v) {
  return tfm_test::make_tensor<tfm::tensor<T, S1>>(S1(static_cast<index_t>(v.size())),
                                                   cast_vec<T>(v));
}
template <class T>
tfm::tensor<T, S2> t2(const std::vector<double>& v, index_t B, index_t T_) {
  REQUIRE(static_cast<index_t>(v.size()) == B * T_);
  return tfm_test::make_tensor<tfm::tensor<T, S2>>(S2(B, T_), cast_vec<T>(v));
}

/// |got - want| <= atol + rtol |want| (and both finite), with both numbers in the report.
inline void check_close(double got, double want, double rtol, double atol, const char* what) {
  INFO(what, ": got ", got, ", want ", want);
  CHECK(std::isfinite(got));
  CHECK(std::fabs(got - want) <= atol + rtol * std::fabs(want));
}

template <class V>
std::vector<double> grad_of(const V& v) {
  std::vector<double> g(static_cast<std::size_t>(v.size()));
  for (index_t i = 0; i < v.size(); ++i) g[static_cast<std::size_t>(i)] = v.grad().data()[i];
  return g;
}

}  // namespace al
