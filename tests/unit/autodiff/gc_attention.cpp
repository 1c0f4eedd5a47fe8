// Gradient checks of attention (ops/attention.hpp) at the var level: the fused flash-style op
// (one "attention" node with its own vjp) and the composed reference (matmul, softmax, mask,
// index_select nodes), for MHA, GQA and MQA, causal or not, sliding windows, ALiBi, an explicit
// q_offset with fewer queries than keys, a custom scale, and q/k/v given as (B, T, H, D) and
// permuted to (B, H, T, D) as a projection writes them.
#include "gc_cases.hpp"
#include "gc_support.hpp"

#include <doctest/doctest.h>
#include <typeformer/ops/attention.hpp>
#include <typeformer/ops/view.hpp>

#include <sstream>
#include <string>

using namespace tfm;
using tfm::testing::gradcheck;

namespace gc {
namespace {
using S4 = dyn_shape<4>;

struct geometry {
  index_t B, H, G, T, S, D;
};

std::string describe(const geometry& q, const attention_options& o) {
  std::ostringstream s;
  s << "B" << q.B << " H" << q.H << " G" << q.G << " T" << q.T << " S" << q.S << " D" << q.D
    << (o.causal ? " causal" : " full") << " window " << o.window << (o.alibi ? " alibi" : "")
    << " q_offset " << o.q_offset << " scale " << o.scale;
  return s.str();
}

void attention_case(const geometry& q, const attention_options& o, std::mt19937& g) {
  auto qv = leaf(rnd(S4(q.B, q.H, q.T, q.D), g), "q");
  auto kv = leaf(rnd(S4(q.B, q.G, q.S, q.D), g), "k");
  auto vv = leaf(rnd(S4(q.B, q.G, q.S, q.D), g), "v");
  auto fused = [&o](const auto& a, const auto& b, const auto& c) { return attention(a, b, c, o); };
  auto composed = [&o](const auto& a, const auto& b, const auto& c) {
    return attention_composed(a, b, c, o);
  };
  const std::string what = describe(q, o);
  expect_gc("attention", "fused " + what, gradcheck(fused, qv, kv, vv));
  expect_gc("attention", "composed " + what, gradcheck(composed, qv, kv, vv));
}
}  // namespace

void gc_attention() {
  auto g = tfm_test::rng(81);
  {
    auto q = leaf(rnd(S4(1, 2, 3, 4), g), "q");
    expect_records(attention(q, q, q), "attention");
    auto c = attention_composed(q, q, q);
    expect_records(c, "matmul");
    expect_records(c, "softmax");
  }
  attention_options causal;
  attention_case({2, 2, 2, 4, 4, 4}, causal, g);  // MHA
  attention_case({1, 4, 2, 3, 3, 4}, causal, g);  // GQA
  attention_case({1, 3, 1, 3, 3, 4}, causal, g);  // MQA
  attention_options full;
  full.causal = false;
  attention_case({1, 2, 1, 3, 5, 4}, full, g);  // not causal, T < S
  attention_options win;
  win.window = 2;
  attention_case({1, 2, 2, 5, 5, 4}, win, g);  // sliding window
  attention_options alibi;
  alibi.alibi = true;
  attention_case({1, 3, 3, 4, 4, 2}, alibi, g);  // ALiBi with H not a power of two
  attention_options off;
  off.q_offset = 1;  // queries at key positions 1, 2 of 5; scale 0.5
  off.scale = 0.5;
  attention_case({2, 2, 1, 2, 5, 4}, off, g);
  attention_options all;
  all.alibi = true;
  all.window = 3;
  all.q_offset = 2;
  attention_case({1, 4, 2, 3, 6, 4}, all, g);  // GQA + ALiBi + window + q_offset

  // (B, T, H, D) inputs permuted to (B, H, T, D) inside f.
  auto q = leaf(rnd(S4(2, 3, 2, 4), g), "q(B,T,H,D)");
  auto k = leaf(rnd(S4(2, 3, 1, 4), g), "k(B,T,G,D)");
  auto v = leaf(rnd(S4(2, 3, 1, 4), g), "v(B,T,G,D)");
  expect_gc("attention", "fused, inputs permuted from (B,T,H,D)",
            gradcheck(
                [](const auto& a, const auto& b, const auto& c) {
                  return attention(permute<0, 2, 1, 3>(a), permute<0, 2, 1, 3>(b),
                                   permute<0, 2, 1, 3>(c));
                },
                q, k, v));
}

}  // namespace gc
