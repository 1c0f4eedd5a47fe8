// Gradient checks of lora_linear (ops/lora_linear.hpp): the dense base with and without its own
// gradient, a bias, two parts writing separate row ranges (nn::gpt's fused q/k/v map), a 3-D
// input, and the adapter dropout (its masks fixed by resetting the generator position per call).
#include "gc_cases.hpp"
#include "gc_support.hpp"

#include <doctest/doctest.h>
#include <typeformer/ops/lora_linear.hpp>

#include <memory>

using namespace tfm;
using tfm::testing::gradcheck;

namespace gc {
namespace {
using S1 = dyn_shape<1>;
using S2 = dyn_shape<2>;
using S3 = dyn_shape<3>;

// Two parts: rows [0, 2) with rank 3 and rows [3, 6) with rank 2 of a 6-row map.
template <class A1, class B1, class A2, class B2>
lora_update<double> two_parts(const A1& a1, const B1& b1, const A2& a2, const B2& b2, double p,
                              std::shared_ptr<lora_dropout_state> st) {
  lora_update<double> u;
  u.scale = 1.7;
  u.dropout = p;
  u.state = std::move(st);
  u.parts.push_back({0, 2, var<double, S2>(a1.data()), var<double, S2>(b1.data())});
  u.parts.push_back({3, 3, var<double, S2>(a2.data()), var<double, S2>(b2.data())});
  return u;
}
}  // namespace

void gc_lora_linear() {
  auto g = tfm_test::rng(57);
  auto x = leaf(rnd(S3(2, 3, 5), g), "x");
  auto w = leaf(rnd(S2(6, 5), g), "w");
  auto b = leaf(rnd(S1(6), g), "b");
  auto a1 = leaf(rnd(S2(3, 5), g), "a1");
  auto b1 = leaf(rnd(S2(2, 3), g), "b1");
  auto a2 = leaf(rnd(S2(2, 5), g), "a2");
  auto b2 = leaf(rnd(S2(3, 2), g), "b2");
  auto f = [](const auto& x, const auto& w, const auto& b, const auto& a1, const auto& b1,
              const auto& a2, const auto& b2) {
    auto u = two_parts(a1, b1, a2, b2, 0.0, nullptr);
    return lora_linear(x, w, nullptr, b, &u);
  };
  expect_records(f(x, w, b, a1, b1, a2, b2), "lora_linear");
  expect_gc("lora_linear", "two parts, bias, trainable base",
            gradcheck(f, x, w, b, a1, b1, a2, b2));
  // A frozen base (no gradient for W, the LoRA case) and no bias.
  tensor<double, S2> wv = rnd(S2(6, 5), g);
  auto fz = [wv](const auto& x, const auto& a1, const auto& b1, const auto& a2, const auto& b2) {
    auto u = two_parts(a1, b1, a2, b2, 0.0, nullptr);
    var<double, S2> frozen(wv);
    var<double, S1> nob;
    return lora_linear(x, frozen, nullptr, nob, &u);
  };
  expect_gc("lora_linear", "frozen base, no bias", gradcheck(fz, x, a1, b1, a2, b2));
  // Dropout on the adapter's input: the same masks on every call.
  auto st = std::make_shared<lora_dropout_state>();
  st->training = true;
  st->seed = 11;
  auto fd = [st](const auto& x, const auto& w, const auto& a1, const auto& b1, const auto& a2,
                 const auto& b2) {
    st->offset = 0;
    auto u = two_parts(a1, b1, a2, b2, 0.4, st);
    var<double, S1> nob;
    return lora_linear(x, w, nullptr, nob, &u);
  };
  expect_gc("lora_linear", "adapter dropout 0.4", gradcheck(fd, x, w, a1, b1, a2, b2));
}

}  // namespace gc
