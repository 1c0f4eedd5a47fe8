// Non-contiguous operands and destinations: transposed, permuted, sliced (offset, step), selected,
// reversed (negative stride) and padded-row views. As inputs, the result must equal the same
// expression on contiguous copies bit for bit (exact expression) or to NMSE <= 1e-7
// (transcendental, whose SIMD body / scalar tail split depends on the layout). As destinations,
// the written elements must equal the contiguous result bit for bit and every element outside the
// view must be untouched.
#include <doctest/doctest.h>

#include <array>
#include <string>
#include <vector>

#include "tfm_test.hpp"
#include "typeformer/backend/cpu/elementwise.hpp"
#include "typeformer/core/view.hpp"

using tfm::dyn;
using tfm::index_t;
using tfm::shape;
using tfm::tensor;
using tfm::tensor_view;

namespace {

/// A contiguous tensor with the elements of view v (row-major), copied by the test helper.
template <class V>
auto contiguous_copy(const V& v) {
  using T = std::remove_cv_t<typename V::element_type>;
  tensor<T, tfm::dyn_shape<V::rank>> c(tfm::dyn_shape<V::rank>::from_extents(v.shape().extents()));
  tfm_test::from_vector(c, tfm_test::to_vector(v));
  return c;
}

/// Checks expressions of two views x, y (same shape) against contiguous copies, and writing
/// into the view f(Q) of a fresh parent Q (extents `ext`, filled with 7) against the contiguous
/// result.
template <class T, class VX, class VY, class F>
void check_views(const VX& x, const VY& y, std::array<index_t, 3> ext, F&& f,
                 const std::string& what) {
  INFO(what << " dtype " << std::string(tfm::dtype_name<T>()) << " shape "
            << x.shape().to_string());
  auto cx = contiguous_copy(x);
  auto cy = contiguous_copy(y);
  using RS = tfm::dyn_shape<VX::rank>;
  // Inputs.
  tensor<T, RS> got = tfm::maximum(x - y, y) * x;
  tensor<T, RS> want = tfm::maximum(cx - cy, cy) * cx;
  TFM_CHECK_BITWISE(tfm_test::to_vector(got), tfm_test::to_vector(want));
  tensor<T, RS, tfm::reference> got_ref = tfm::maximum(x - y, y) * x;
  TFM_CHECK_BITWISE(tfm_test::to_vector(got_ref), tfm_test::to_vector(want));
  if constexpr (!std::is_integral_v<T>) {
    tensor<T, RS> gt = tfm::exp(x) * tfm::sigmoid(y);
    tensor<T, RS> wt = tfm::exp(cx) * tfm::sigmoid(cy);
    TFM_CHECK_REPORT(tfm_test::compare(tfm_test::to_vector(gt), tfm_test::to_vector(wt), 1e-7));
  }
  // Destination.
  tensor<T, shape<dyn, dyn, dyn>> parent(ext[0], ext[1], ext[2]);
  parent.fill(static_cast<tfm::compute_t<T>>(7));
  auto dst = f(parent);
  const auto before = tfm_test::to_vector(parent);
  dst = tfm::maximum(x - y, y) * x;
  TFM_CHECK_BITWISE(tfm_test::to_vector(dst), tfm_test::to_vector(want));
  const auto after = tfm_test::to_vector(parent);
  std::vector<char> covered(before.size(), 0);
  tfm_test::detail::for_each_offset(dst.shape().extents(), dst.strides(), [&](index_t off) {
    covered[static_cast<std::size_t>(dst.data() - parent.data() + off)] = 1;
  });
  std::size_t changed_outside = 0;
  for (std::size_t i = 0; i < before.size(); ++i)
    if (!covered[i] && tfm_test::bits_of(before[i]) != tfm_test::bits_of(after[i]))
      ++changed_outside;
  CHECK_MESSAGE(changed_outside == 0, changed_outside << " elements outside the view changed");
}

template <class T>
tensor<T, shape<dyn, dyn, dyn>> random3(index_t a, index_t b, index_t c, std::mt19937& g) {
  tensor<T, shape<dyn, dyn, dyn>> t(a, b, c);
  tfm_test::from_vector(t,
                        tfm_test::random_vector<T>(static_cast<std::size_t>(t.size()), g, -3, 3));
  return t;
}

template <class T>
void all_layouts(std::mt19937& g) {
  const index_t w = tfm::simd::width<float> + 1;
  // 1. transposed (last two axes) inputs and destination
  {
    auto px = random3<T>(3, w, 19, g), py = random3<T>(3, w, 19, g);
    check_views<T>(
        tfm::transpose(px), tfm::transpose(py), {3, w, 19},
        [](auto& p) { return tfm::transpose(p); }, "transpose");
  }
  // 2. full permutation
  {
    auto px = random3<T>(5, 6, 7, g), py = random3<T>(5, 6, 7, g);
    check_views<T>(
        tfm::permute<2, 0, 1>(px), tfm::permute<2, 0, 1>(py), {5, 6, 7},
        [](auto& p) { return tfm::permute<2, 0, 1>(p); }, "permute<2,0,1>");
  }
  // 3. slice with an unaligned offset and a step on the inner axis (gather path)
  {
    auto px = random3<T>(4, 3, 70, g), py = random3<T>(4, 3, 70, g);
    auto f = [](auto& p) { return tfm::slice<2>(p, 3, 70, 2); };
    check_views<T>(f(px), f(py), {4, 3, 70}, f, "slice step 2 offset 3");
  }
  // 4. column block: rows are not mergeable (padded rows), width = SIMD width + 1
  {
    auto px = random3<T>(2, 9, 40, g), py = random3<T>(2, 9, 40, g);
    auto f = [w](auto& p) { return tfm::slice<2>(p, 5, 5 + w); };
    check_views<T>(f(px), f(py), {2, 9, 40}, f, "column block");
  }
  // 5. select (rank drops) on the middle axis
  {
    auto px = random3<T>(6, 4, 33, g), py = random3<T>(6, 4, 33, g);
    auto f = [](auto& p) { return tfm::select<1>(p, 2); };
    check_views<T>(f(px), f(py), {6, 4, 33}, f, "select<1>");
  }
  // 6. reversed rows (negative stride), hand-made view
  {
    auto px = random3<T>(1, 8, 17, g), py = random3<T>(1, 8, 17, g);
    auto f = [](auto& p) {
      using E = std::remove_reference_t<decltype(*p.data())>;
      return tensor_view<E, shape<dyn, dyn>>(p.data() + 7 * 17, shape<dyn, dyn>(8, 17), {-17, 1});
    };
    check_views<T>(f(px), f(py), {1, 8, 17}, f, "reversed rows");
  }
  // 7. mixed: transposed x with a contiguous-slice y
  {
    auto px = random3<T>(2, 33, 31, g), py = random3<T>(2, 31, 33, g);
    check_views<T>(
        tfm::transpose(px), tfm::slice<0>(py, 0, 2), {2, 33, 31},
        [](auto& p) { return tfm::transpose(p); }, "transpose with slice");
  }
  // 8. large transposed (OpenMP path with a gather on every leaf)
  {
    auto px = random3<T>(4, 300, 257, g), py = random3<T>(4, 300, 257, g);
    check_views<T>(
        tfm::transpose(px), tfm::transpose(py), {4, 300, 257},
        [](auto& p) { return tfm::transpose(p); }, "large transpose");
  }
}

}  // namespace

TEST_CASE("strided, permuted and sliced views as inputs and destinations equal contiguous copies") {
  auto g = tfm_test::rng(0x57d);
  SUBCASE("f32") { all_layouts<float>(g); }
  SUBCASE("f64") { all_layouts<double>(g); }
  SUBCASE("f16") { all_layouts<tfm::f16>(g); }
  SUBCASE("i32") { all_layouts<std::int32_t>(g); }
}
