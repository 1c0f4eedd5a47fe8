// Gradient checks of the index ops (ops/gather.hpp: embedding, index_select, gather, with
// repeated indices so that the scatter-adds accumulate) and of the row normalisations
// (ops/normalize.hpp: softmax, log_softmax, layer_norm with and without gamma/beta, rms_norm with
// and without weight), on 3-D inputs, size-1 axes and permuted inputs.
#include "gc_cases.hpp"
#include "gc_support.hpp"

#include <doctest/doctest.h>
#include <typeformer/ops/elementwise.hpp>
#include <typeformer/ops/gather.hpp>
#include <typeformer/ops/normalize.hpp>
#include <typeformer/ops/view.hpp>

#include <cstdint>

using namespace tfm;
using tfm::testing::gradcheck;

namespace gc {
namespace {
using S1 = dyn_shape<1>;
using S2 = dyn_shape<2>;
using S3 = dyn_shape<3>;
using I1 = tensor<std::int32_t, S1>;
using I2 = tensor<std::int32_t, S2>;
using I3 = tensor<std::int32_t, S3>;
}  // namespace

void gc_embedding() {
  auto g = tfm_test::rng(61);
  auto w = leaf(rnd(S2(6, 4), g), "weight");
  I2 ids(S2(2, 3), {1, 5, 1, 0, 2, 1});  // row 1 three times, rows 3 and 4 never
  auto f = [&ids](const auto& v) { return tfm::square(embedding(v, ids)); };
  expect_records(f(w), "embedding");
  expect_gc("embedding", "(6,4) table, ids (2,3) with repeats", gradcheck(f, w));
  I1 ids1(S1(4), {3, 3, 3, 0});
  expect_gc(
      "embedding", "1-D ids, after a slice of the table",
      gradcheck([&ids1](const auto& v) { return tfm::exp(embedding(slice<1>(v, 1, 3), ids1)); },
                w));
}

void gc_index_select() {
  auto g = tfm_test::rng(62);
  auto x = leaf(rnd(S3(2, 5, 3), g), "x");
  I1 ids(S1(4), {4, 1, 4, 0});
  auto f = [&ids](const auto& v) { return tfm::square(index_select<1>(v, ids)); };
  expect_records(f(x), "index_select");
  expect_gc("index_select", "axis 1, repeated ids", gradcheck(f, x));
  I1 ids0(S1(3), {1, 1, 0});
  expect_gc("index_select", "axis 0",
            gradcheck([&ids0](const auto& v) { return tfm::square(index_select<0>(v, ids0)); }, x));
  I1 idl(S1(2), {2, 2});
  expect_gc("index_select", "axis -1 after permute",
            gradcheck(
                [&idl](const auto& v) {
                  return tfm::square(index_select<-1>(permute<0, 2, 1>(v), idl));  // (2,3,5)
                },
                x));
}

void gc_gather() {
  auto g = tfm_test::rng(63);
  auto x = leaf(rnd(S2(3, 5), g), "x");
  I2 idx(S2(3, 4), {0, 4, 4, 2, 1, 1, 1, 1, 3, 0, 3, 2});
  auto f = [&idx](const auto& v) { return tfm::square(gather<1>(v, idx)); };
  expect_records(f(x), "gather");
  expect_gc("gather", "axis 1 of (3,5), index (3,4) with repeats", gradcheck(f, x));
  I2 idx0(S2(2, 5), {2, 0, 1, 2, 2, 0, 0, 1, 1, 2});
  expect_gc("gather", "axis 0",
            gradcheck([&idx0](const auto& v) { return tfm::square(gather<0>(v, idx0)); }, x));
  I2 small(S2(2, 2), {4, 0, 3, 3});  // the index is smaller than x on the other axis
  expect_gc("gather", "index smaller than the input",
            gradcheck([&small](const auto& v) { return tfm::square(gather<1>(v, small)); }, x));
  auto x3 = leaf(rnd(S3(2, 3, 4), g), "x");
  I3 idx3(S3(2, 4, 1), {1, 0, 2, 2, 0, 0, 1, 2});
  expect_gc(
      "gather", "3-D, axis 1 after permute (2,4,3)",
      gradcheck(
          [&idx3](const auto& v) { return tfm::square(gather<2>(permute<0, 2, 1>(v), idx3)); },
          x3));
}

namespace {
template <class F>
void row_case(const char* op, F f) {
  auto g = tfm_test::rng(std::hash<std::string>{}(op));
  auto x = leaf(rnd(S3(2, 3, 5), g, -2.0, 2.0), "x");
  expect_records(f(x), op);
  expect_gc(op, "(2,3,5)", gradcheck(f, x));
  expect_gc(op, "(3,1,4)", gradcheck(f, leaf(rnd(S3(3, 1, 4), g, -2.0, 2.0), "x")));
  expect_gc(op, "(2,3,1): rows of one", gradcheck(f, leaf(rnd(S3(2, 3, 1), g), "x")));
  expect_gc(op, "rows near 50", gradcheck(f, leaf(rnd(S3(2, 2, 4), g, 49.0, 51.0), "x")));
  expect_gc(op, "over what was axis 0 (after permute)",
            gradcheck([&f](const auto& v) { return f(permute<1, 2, 0>(v)); }, x));
}
}  // namespace

void gc_softmax() {
  row_case("softmax", [](const auto& v) { return softmax(v); });
}
void gc_log_softmax() {
  row_case("log_softmax", [](const auto& v) { return log_softmax(v); });
}

void gc_layer_norm() {
  auto g = tfm_test::rng(64);
  auto x = leaf(rnd(S3(2, 3, 6), g, -2.0, 2.0), "x");
  auto gamma = leaf(rnd(S1(6), g, 0.5, 1.5), "gamma");
  auto beta = leaf(rnd(S1(6), g), "beta");
  auto both = [](const auto& v, const auto& w, const auto& b) { return layer_norm(v, w, b); };
  expect_records(both(x, gamma, beta), "layer_norm");
  expect_gc("layer_norm", "gamma and beta", gradcheck(both, x, gamma, beta));
  expect_gc(
      "layer_norm", "gamma only",
      gradcheck([](const auto& v, const auto& w) { return layer_norm(v, w, none); }, x, gamma));
  expect_gc(
      "layer_norm", "beta only",
      gradcheck([](const auto& v, const auto& b) { return layer_norm(v, none, b); }, x, beta));
  expect_gc("layer_norm", "neither",
            gradcheck([](const auto& v) { return layer_norm(v, none, none); }, x));
  auto xp = leaf(rnd(S3(6, 2, 3), g, -2.0, 2.0), "x");
  expect_gc("layer_norm", "after permute, eps 1e-3",
            gradcheck([](const auto& v, const auto& w,
                         const auto& b) { return layer_norm(permute<1, 2, 0>(v), w, b, 1e-3); },
                      xp, gamma, beta));
}

void gc_rms_norm() {
  auto g = tfm_test::rng(65);
  auto x = leaf(rnd(S3(2, 3, 6), g, -2.0, 2.0), "x");
  auto w = leaf(rnd(S1(6), g, 0.5, 1.5), "weight");
  auto f = [](const auto& v, const auto& s) { return rms_norm(v, s); };
  expect_records(f(x, w), "rms_norm");
  expect_gc("rms_norm", "with weight", gradcheck(f, x, w));
  expect_gc("rms_norm", "without weight",
            gradcheck([](const auto& v) { return rms_norm(v, none); }, x));
  expect_gc("rms_norm", "(3,1,6) after permute",
            gradcheck([](const auto& v, const auto& s) { return rms_norm(permute<1, 0, 2>(v), s); },
                      leaf(rnd(S3(1, 3, 6), g, -2.0, 2.0), "x"), w));
}

}  // namespace gc
