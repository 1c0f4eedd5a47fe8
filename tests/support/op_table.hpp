// tests/support/op_table.hpp
//
// tfm_test::check_op_table: a test's table of gradient-check cases covers exactly the ops of a
// registry list (autodiff/registry.hpp's TFM_..._OPS names): every registered op has a case, and
// every case names a registered differentiable op. The count tripwire stays a static_assert in
// the test (a new op then fails to compile until its case is written).
#pragma once

#include <doctest/doctest.h>

#include <string>
#include <string_view>

#include "typeformer/autodiff/registry.hpp"

namespace tfm_test {

/// `registry`: the list's op names; `table`: the cases, each with a member `op` naming its op;
/// `what`: the list, for messages ("router ops").
template <class Names, class Table>
void check_op_table(const Names& registry, const Table& table, std::string_view what) {
  std::string missing, stale;
  for (std::string_view name : registry) {
    bool found = false;
    for (const auto& c : table) found = found || c.op == name;
    if (!found) missing += std::string(name) + " ";
  }
  for (const auto& c : table)
    if (!tfm::is_differentiable_op(c.op)) stale += std::string(c.op) + " ";
  CHECK_MESSAGE(missing.empty(), std::string(what), " without a gradcheck case: ", missing);
  CHECK_MESSAGE(stale.empty(), "cases for ops not in the registry: ", stale);
}

}  // namespace tfm_test
