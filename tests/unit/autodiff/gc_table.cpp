// The registry tripwire (TESTING.md, STYLE.md 8): every name in TFM_DIFFERENTIABLE_OPS has a
// float64 gradient check here. Adding an op to autodiff/registry.hpp without a row in this table
// breaks the static_assert on the count and the "no case" test names it; an op that records a
// name missing from the registry throws under TFM_CHECK_OP_REGISTRY (set for this target).
#include "gc_cases.hpp"
#include "gc_support.hpp"

#include <doctest/doctest.h>
#include <typeformer/autodiff/registry.hpp>

#include <cstdio>
#include <iterator>
#include <string>
#include <string_view>

namespace {
struct op_case {
  std::string_view op;
  void (*run)();
};

// clang-format off
constexpr op_case table[] = {
    {"add", gc::gc_add}, {"sub", gc::gc_sub}, {"mul", gc::gc_mul}, {"div", gc::gc_div},
    {"pow", gc::gc_pow}, {"min", gc::gc_min}, {"max", gc::gc_max}, {"where", gc::gc_where},
    {"neg", gc::gc_neg}, {"exp", gc::gc_exp}, {"log", gc::gc_log}, {"sqrt", gc::gc_sqrt},
    {"rsqrt", gc::gc_rsqrt}, {"tanh", gc::gc_tanh}, {"sigmoid", gc::gc_sigmoid},
    {"silu", gc::gc_silu}, {"gelu_tanh", gc::gc_gelu_tanh}, {"gelu_erf", gc::gc_gelu_erf},
    {"relu", gc::gc_relu}, {"abs", gc::gc_abs}, {"square", gc::gc_square}, {"erf", gc::gc_erf},
    {"normal_cdf", gc::gc_normal_cdf},
    {"sum", gc::gc_sum}, {"mean", gc::gc_mean}, {"logsumexp", gc::gc_logsumexp},
    {"matmul", gc::gc_matmul},
    {"reshape", gc::gc_reshape}, {"permute", gc::gc_permute}, {"slice", gc::gc_slice},
    {"concat", gc::gc_concat},
    {"embedding", gc::gc_embedding}, {"index_select", gc::gc_index_select},
    {"gather", gc::gc_gather},
    {"softmax", gc::gc_softmax}, {"log_softmax", gc::gc_log_softmax},
    {"layer_norm", gc::gc_layer_norm}, {"rms_norm", gc::gc_rms_norm},
    {"cross_entropy", gc::gc_cross_entropy},
    {"linear_cross_entropy", gc::gc_linear_cross_entropy}, {"dropout", gc::gc_dropout},
    {"checkpoint", gc::gc_checkpoint},
    {"linear", gc::gc_linear}, {"rope", gc::gc_rope}, {"lora_linear", gc::gc_lora_linear},
    {"attention", gc::gc_attention},
};
// clang-format on

constexpr std::size_t table_rows() { return std::size(table); }
static_assert(table_rows() == tfm::differentiable_op_count,
              "autodiff/registry.hpp and the gradcheck table differ in size: add a gc_<op>() case "
              "for every op in TFM_DIFFERENTIABLE_OPS (tests/unit/autodiff/gc_table.cpp)");

const op_case* find_case(std::string_view op) {
  for (const auto& c : table)
    if (c.op == op) return &c;
  return nullptr;
}
}  // namespace

TEST_CASE("registry: every differentiable op has a gradcheck case, and no case is stale") {
  std::string missing, stale;
  for (auto name : tfm::detail::differentiable_op_names)
    if (!find_case(name)) missing += std::string(name) + " ";
  for (const auto& c : table)
    if (!tfm::is_differentiable_op(c.op)) stale += std::string(c.op) + " ";
  CHECK_MESSAGE(missing.empty(), "registry ops without a gradcheck case: ", missing);
  CHECK_MESSAGE(stale.empty(), "gradcheck cases for ops not in the registry: ", stale);
  MESSAGE(tfm::differentiable_op_count, " differentiable ops, ", table_rows(), " cases");
}

TEST_CASE("gradcheck (float64, central differences, eps 1e-6) of every registered op") {
  tfm_test::seed();  // prints the seed the cases draw their inputs from
  for (const auto& c : table) {
    SUBCASE(std::string(c.op).c_str()) { c.run(); }
  }
}

TEST_CASE("summary: max relative error per op") {
  // Runs after the cases above in the default (file) order; prints what they recorded.
  std::string s;
  char line[96];
  for (const auto& [op, err] : gc::op_summary()) {
    std::snprintf(line, sizeof line, "  %-14s %.2e\n", op.c_str(), err);
    s += line;
  }
  if (!s.empty()) MESSAGE("max relative error per op (floor atol/rtol = 1e-2):\n", s);
}
