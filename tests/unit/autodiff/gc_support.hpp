// tests/unit/autodiff/gc_support.hpp
//
// Helpers of the autodiff tests:
//   inputs:  rnd<S>(shape, rng, lo, hi)      a float64 tensor, uniform values from std::mt19937
//            away_from<S>(shape, rng, ...)   values with |x| in [gap, hi] (keeps relu/abs off 0)
//            leaf(t, name)                   tfm::parameter with a name (names show in reports)
//   checks:  expect_gc(op, what, result, strict)  CHECKs passed; strict cases (smooth ops away
//                                            from kinks, moderate values) also need
//                                            max_rel_error < 1e-6 (TESTING.md), and their figure
//                                            goes into the per-op summary
//            recorded_ops(v)                 names of the ops recorded in the graph below v
//            expect_records(v, op)           CHECK that the graph of v has a node named op
//   summary: op_summary()                    op -> worst max_rel_error, printed by the table
// The op cases (gc_<op>() functions, declared in gc_cases.hpp) live in the gc_*.cpp files; the
// table that maps every registry name to its case is gc_table.cpp.
#pragma once

#include <doctest/doctest.h>
#include <tfm_test.hpp>
#include <typeformer/autodiff/variable.hpp>
// The ops evaluate expressions on tfm::cpu, whose evaluate() lives here (ops/*.hpp and
// autodiff/support.hpp do not include it yet; see the report).
#include <typeformer/backend/cpu/elementwise.hpp>
#include <typeformer/core/tensor.hpp>
#include <typeformer/testing/gradcheck.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace gc {

using tfm::index_t;

/// A float64 tensor of shape s, uniform in [lo, hi] (std::mt19937, independent of tfm's RNG).
template <class S>
tfm::tensor<double, S> rnd(const S& s, std::mt19937& g, double lo = -1.0, double hi = 1.0) {
  tfm::tensor<double, S> t(s);
  tfm_test::from_vector(
      t, tfm_test::random_vector<double>(static_cast<std::size_t>(t.size()), g, lo, hi));
  return t;
}

/// A float64 tensor of shape s filled with v.
template <class S>
tfm::tensor<double, S> full(const S& s, double v) {
  tfm::tensor<double, S> t(s);
  t.fill(v);
  return t;
}

/// Values with magnitude in [gap, hi] and a random sign (away from kinks at 0).
template <class S>
tfm::tensor<double, S> away_from_zero(const S& s, std::mt19937& g, double gap = 0.1,
                                      double hi = 1.5) {
  auto t = rnd(s, g, gap, hi);
  std::bernoulli_distribution sign(0.5);
  for (index_t i = 0; i < t.size(); ++i)
    if (sign(g)) t.data()[i] = -t.data()[i];
  return t;
}

/// Input domains of the elementwise ops' gradient checks.
enum class domain { any, positive, nonzero };

/// Values for a domain: any in [-1.5, 1.5], positive in [0.5, 2], nonzero |x| in [0.1, 1.5].
template <class S>
tfm::tensor<double, S> draw(const S& s, std::mt19937& g, domain d) {
  switch (d) {
    case domain::positive:
      return rnd(s, g, 0.5, 2.0);
    case domain::nonzero:
      return away_from_zero(s, g, 0.1, 1.5);
    default:
      return rnd(s, g, -1.5, 1.5);
  }
}

/// A leaf that requires grad, with a name for reports.
template <class X>
auto leaf(const X& t, const char* name) {
  auto v = tfm::parameter(t);
  v.set_name(name);
  return v;
}

/// Worst max_rel_error seen per op (for the summary the table test prints).
inline std::map<std::string, double>& op_summary() {
  static std::map<std::string, double> m;
  return m;
}

/// Checks a gradcheck result: passed, and for strict cases max_rel_error < 1e-6 (TESTING.md).
inline void expect_gc(const std::string& op, const std::string& what,
                      const tfm::testing::gradcheck_result& r, bool strict = true) {
  CHECK_MESSAGE(r.passed, op, " / ", what, ": ", r.str());
  CHECK_MESSAGE(r.checked > 0, op, " / ", what, ": nothing was checked");
  if (!strict) return;
  CHECK_MESSAGE(r.max_rel_error < 1e-6, op, " / ", what, ": ", r.str());
  auto& m = op_summary()[op];
  m = std::max(m, r.max_rel_error);
}

/// Names of the ops recorded in the graph that produced v (empty for a leaf).
template <class V>
std::set<std::string> recorded_ops(const V& v) {
  std::set<std::string> names;
  std::vector<tfm::detail::node*> stack;
  std::set<tfm::detail::node*> seen;
  if (v.data()->creator) stack.push_back(v.data()->creator.get());
  while (!stack.empty()) {
    auto* n = stack.back();
    stack.pop_back();
    if (!seen.insert(n).second) continue;
    names.insert(n->op_name);
    for (auto& in : n->inputs)
      if (in && in->creator) stack.push_back(in->creator.get());
  }
  return names;
}

template <class V>
void expect_records(const V& v, const std::string& op) {
  auto names = recorded_ops(v);
  std::string all;
  for (auto& n : names) all += n + " ";
  CHECK_MESSAGE(names.count(op) == 1, "the graph records {", all, "} but not '", op, "'");
}

}  // namespace gc
