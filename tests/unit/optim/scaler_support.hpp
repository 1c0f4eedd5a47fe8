// tests/unit/optim/scaler_support.hpp
//
// A loss with a known gradient for the loss-scaler tests: loss = sum(w * c) for a parameter w,
// so d loss / d w = c exactly in any type.
#pragma once

#include "optim_test_util.hpp"

#include <typeformer/ops/elementwise.hpp>
#include <typeformer/ops/reduce.hpp>

namespace optim_test {

template <class T>
struct linear_loss {
  param_set<T> ps;
  tfm::tensor<T, S1> c;
  linear_loss(const vec& w0, const vec& c0)
      : ps(params<T>({w0}, {true})), c(S1(static_cast<index_t>(c0.size()))) {
    for (std::size_t k = 0; k < c0.size(); ++k) c.data()[k] = tfm_test::from_double<T>(c0[k]);
  }
  tfm::var<T, tfm::shape<>> loss() const { return sum(ps.vars[0] * tfm::constant(c)); }
  vec c_values() const {
    vec out;
    for (index_t k = 0; k < c.size(); ++k) out.push_back(tfm_test::to_double(c.data()[k]));
    return out;
  }
};

}  // namespace optim_test
