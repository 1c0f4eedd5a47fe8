// Aliasing (TESTING.md "Backends"): an expression assigned to a tensor or view that reads the
// destination's own storage must give the copy-first answer, i.e. the result of copying every
// input to a fresh buffer before writing. expr/evaluate.hpp documents how: assign() evaluates
// same-position aliasing (`a = a + b`, `x = x + x * x`) in place, and routes every other overlap
// (a transposed, permuted, shifted, reversed or broadcast view of the destination) through a
// temporary. Every case runs on the cpu and the reference backend (the destination's backend
// evaluates), with float and double, at sizes that cover SIMD tails and the threaded cpu path.
//
// The reference is independent of the library: inputs are copied out with tfm_test::to_vector
// (index arithmetic on data() and strides) before the assignment, and the expected values are
// computed in double with plain loops. Ops that are exact in double (one rounding in T: sums,
// products by 2, a * 2 + a) are compared bitwise; others to a tight relative tolerance.
#include <doctest/doctest.h>

#include <array>
#include <cstddef>
#include <string>
#include <type_traits>
#include <vector>

#include "tfm_test.hpp"
#include "typeformer/backend/cpu/elementwise.hpp"
#include "typeformer/backend/reference/elementwise.hpp"
#include "typeformer/core/storage.hpp"
#include "typeformer/core/view.hpp"

using tfm::dyn;
using tfm::index_t;
using tfm::shape;
using tfm::tensor;
using tfm::tensor_view;

namespace {

template <class T, class B, std::size_t R>
using dtensor = tensor<T, tfm::dyn_shape<R>, B>;

/// A tensor of extents `ext` with values uniform in [-4, 4] drawn from g.
template <class T, class B, std::size_t R>
dtensor<T, B, R> random_tensor(const std::array<index_t, R>& ext, std::mt19937& g) {
  const auto s = tfm::dyn_shape<R>::from_extents(ext);
  const auto v = tfm_test::random_vector<T>(static_cast<std::size_t>(s.size()), g, -4, 4);
  return tfm_test::make_tensor<dtensor<T, B, R>>(s, v);
}

/// Elements of a tensor/view (row-major) widened to double: the copy-first input.
template <class X>
std::vector<double> copy_out(const X& x) {
  std::vector<double> r;
  for (auto v : tfm_test::to_vector(x)) r.push_back(tfm_test::to_double(v));
  return r;
}

/// want (double) rounded to T once, compared bit for bit with got.
template <class T>
void check_exact(const std::vector<T>& got, const std::vector<double>& want) {
  std::vector<T> w;
  for (double d : want) w.push_back(tfm_test::from_double<T>(d));
  TFM_CHECK_BITWISE(got, w);
}

/// got vs want for x + x * x with |x| <= 4 in T: one rounding of x * x (at most 16 ulp(1)/2,
/// which dominates near cancellation) plus one of the sum. (With FMA contraction it is exact.)
template <class T>
void check_close(const std::vector<T>& got, const std::vector<double>& want) {
  const double atol = std::is_same_v<T, float> ? 2e-6 : 4e-15;
  const double rtol = std::is_same_v<T, float> ? 3e-7 : 5e-16;
  TFM_CHECK_REPORT(tfm_test::all_close(got, want, atol, rtol));
}

template <class B>
const char* backend_name() {
  return std::is_same_v<B, tfm::cpu> ? "cpu" : "reference";
}

/// Heap bytes allocated by f() at its peak above the level before it.
template <class F>
std::size_t peak_extra_bytes(F&& f) {
  tfm::reset_peak_memory();
  const std::size_t before = tfm::memory_stats().current_bytes;
  f();
  return tfm::memory_stats().peak_bytes - before;
}

// Sizes: empty-ish, odd SIMD tails, and (cpu) > 2^15 elements so that the threaded path runs.
constexpr std::array<index_t, 6> sizes_1d{1, 7, 17, 33, 1023, 100003};
constexpr std::array<index_t, 5> sizes_sq{1, 2, 7, 33, 257};

// ---- same-position aliasing: evaluated in place ---------------------------------------------

template <class T, class B>
void same_position(std::mt19937& g) {
  for (index_t n : sizes_1d) {
    INFO(backend_name<B>() << " " << tfm::dtype_name<T>() << " n=" << n);
    const std::array<index_t, 2> ext{3, n};
    {  // a = a + b
      auto a = random_tensor<T, B, 2>(ext, g);
      auto b = random_tensor<T, B, 2>(ext, g);
      const auto va = copy_out(a), vb = copy_out(b);
      const T* before = a.data();
      const std::size_t extra = peak_extra_bytes([&] { a = a + b; });
      std::vector<double> want(va.size());
      for (std::size_t i = 0; i < va.size(); ++i) want[i] = va[i] + vb[i];
      check_exact(tfm_test::to_vector(a), want);
      CHECK(a.data() == before);  // in place: same buffer
      CHECK_MESSAGE(extra == 0, "a = a + b allocated " << extra << " bytes");
    }
    {  // a = a * 2 + a (the destination read twice, through two leaves)
      auto a = random_tensor<T, B, 2>(ext, g);
      const auto va = copy_out(a);
      const std::size_t extra = peak_extra_bytes([&] { a = a * 2 + a; });
      std::vector<double> want(va.size());
      for (std::size_t i = 0; i < va.size(); ++i) want[i] = va[i] * 3;  // exact in double
      check_exact(tfm_test::to_vector(a), want);
      CHECK_MESSAGE(extra == 0, "a = a * 2 + a allocated " << extra << " bytes");
    }
    {  // x = x + x * x, written through a view of the destination
      auto x = random_tensor<T, B, 2>(ext, g);
      const auto vx = copy_out(x);
      auto xv = x.view();
      xv = xv + xv * xv;
      std::vector<double> want(vx.size());
      for (std::size_t i = 0; i < vx.size(); ++i) want[i] = vx[i] + vx[i] * vx[i];
      check_close(tfm_test::to_vector(x), want);
    }
    {  // a strided view assigned from an expression of itself: every other column
      auto x = random_tensor<T, B, 2>(ext, g);
      const auto vx = copy_out(x);
      auto even = tfm::slice<1>(x, 0, n, 2);
      even = even - 1.5;
      std::vector<double> want = vx;
      for (index_t r = 0; r < 3; ++r)
        for (index_t c = 0; c < n; c += 2) want[static_cast<std::size_t>(r * n + c)] -= 1.5;
      check_exact(tfm_test::to_vector(x), want);
    }
  }
}

// ---- transposed / permuted views of the destination -----------------------------------------

template <class T, class B>
void transposed(std::mt19937& g) {
  for (index_t n : sizes_sq) {
    INFO(backend_name<B>() << " " << tfm::dtype_name<T>() << " n=" << n);
    {  // a = transpose(a), square
      auto a = random_tensor<T, B, 2>({n, n}, g);
      const auto va = copy_out(a);
      const std::size_t extra = peak_extra_bytes([&] { a = tfm::transpose(a); });
      std::vector<double> want(va.size());
      for (index_t i = 0; i < n; ++i)
        for (index_t j = 0; j < n; ++j)
          want[static_cast<std::size_t>(i * n + j)] = va[static_cast<std::size_t>(j * n + i)];
      check_exact(tfm_test::to_vector(a), want);
      CHECK(a.shape().extents() == std::array<index_t, 2>{n, n});
      // Documented: the overlapping source goes through a temporary of the destination's size.
      if (n > 1) CHECK(extra >= static_cast<std::size_t>(n * n) * sizeof(T));
    }
    {  // a = transpose(a) + a (transposed and same-position leaves together)
      auto a = random_tensor<T, B, 2>({n, n}, g);
      const auto va = copy_out(a);
      a = tfm::transpose(a) + a;
      std::vector<double> want(va.size());
      for (index_t i = 0; i < n; ++i)
        for (index_t j = 0; j < n; ++j)
          want[static_cast<std::size_t>(i * n + j)] =
              va[static_cast<std::size_t>(j * n + i)] + va[static_cast<std::size_t>(i * n + j)];
      check_exact(tfm_test::to_vector(a), want);
    }
    {  // through a view destination: v = transpose(v) * 2
      auto a = random_tensor<T, B, 2>({n, n}, g);
      const auto va = copy_out(a);
      auto v = a.view();
      v = tfm::transpose(v) * 2;
      std::vector<double> want(va.size());
      for (index_t i = 0; i < n; ++i)
        for (index_t j = 0; j < n; ++j)
          want[static_cast<std::size_t>(i * n + j)] = 2 * va[static_cast<std::size_t>(j * n + i)];
      check_exact(tfm_test::to_vector(a), want);
    }
  }
  {  // static square shape
    INFO(backend_name<B>() << " " << tfm::dtype_name<T>() << " static 33x33");
    tensor<T, shape<33, 33>, B> a;
    tfm_test::from_vector(a, tfm_test::random_vector<T>(33 * 33, g, -4, 4));
    const auto va = copy_out(a);
    a = tfm::transpose(a);
    std::vector<double> want(va.size());
    for (index_t i = 0; i < 33; ++i)
      for (index_t j = 0; j < 33; ++j)
        want[static_cast<std::size_t>(i * 33 + j)] = va[static_cast<std::size_t>(j * 33 + i)];
    check_exact(tfm_test::to_vector(a), want);
  }
  {  // non-square dynamic: the destination takes the transposed shape
    INFO(backend_name<B>() << " " << tfm::dtype_name<T>() << " 37x129 -> 129x37");
    const index_t r = 37, c = 129;
    auto a = random_tensor<T, B, 2>({r, c}, g);
    const auto va = copy_out(a);
    a = tfm::transpose(a) - 0.5;
    CHECK(a.shape().extents() == std::array<index_t, 2>{c, r});
    std::vector<double> want(va.size());
    for (index_t i = 0; i < c; ++i)
      for (index_t j = 0; j < r; ++j)
        want[static_cast<std::size_t>(i * r + j)] = va[static_cast<std::size_t>(j * c + i)] - 0.5;
    check_exact(tfm_test::to_vector(a), want);
  }
  {  // rank 3, cyclic permutation of a cube: (d, d, d) = permute<2, 0, 1>(itself)
    INFO(backend_name<B>() << " " << tfm::dtype_name<T>() << " permute<2,0,1> 19^3");
    const index_t d = 19;
    auto a = random_tensor<T, B, 3>({d, d, d}, g);
    const auto va = copy_out(a);
    a = tfm::permute<2, 0, 1>(a) + a;
    std::vector<double> want(va.size());
    for (index_t i = 0; i < d; ++i)
      for (index_t j = 0; j < d; ++j)
        for (index_t k = 0; k < d; ++k)  // result(i, j, k) = a(j, k, i) + a(i, j, k)
          want[static_cast<std::size_t>((i * d + j) * d + k)] =
              va[static_cast<std::size_t>((j * d + k) * d + i)] +
              va[static_cast<std::size_t>((i * d + j) * d + k)];
    check_exact(tfm_test::to_vector(a), want);
  }
}

// ---- shifted and reversed views of the destination ------------------------------------------

template <class T, class B>
void shifted(std::mt19937& g) {
  for (index_t n : sizes_1d) {
    if (n < 2) continue;
    INFO(backend_name<B>() << " " << tfm::dtype_name<T>() << " n=" << n);
    {  // x[1:n] = x[0:n-1] + 1: evaluated in place front to back this would cascade
      auto x = random_tensor<T, B, 1>({n}, g);
      const auto vx = copy_out(x);
      tfm::slice<0>(x, 1, n) = tfm::slice<0>(x, 0, n - 1) + 1;
      std::vector<double> want = vx;
      for (index_t i = 1; i < n; ++i)
        want[static_cast<std::size_t>(i)] = vx[static_cast<std::size_t>(i - 1)] + 1;
      check_exact(tfm_test::to_vector(x), want);
    }
    {  // x[0:n-1] = x[1:n] * 2 (the other direction)
      auto x = random_tensor<T, B, 1>({n}, g);
      const auto vx = copy_out(x);
      tfm::slice<0>(x, 0, n - 1) = tfm::slice<0>(x, 1, n) * 2;
      std::vector<double> want = vx;
      for (index_t i = 0; i + 1 < n; ++i)
        want[static_cast<std::size_t>(i)] = 2 * vx[static_cast<std::size_t>(i + 1)];
      check_exact(tfm_test::to_vector(x), want);
    }
    {  // x = reversed(x) + x, through a hand-made negative-stride view
      auto x = random_tensor<T, B, 1>({n}, g);
      const auto vx = copy_out(x);
      tensor_view<T, shape<dyn>, B> rev(x.data() + (n - 1), shape<dyn>(n),
                                        std::array<index_t, 1>{-1});
      x = rev + x;
      std::vector<double> want(vx.size());
      for (index_t i = 0; i < n; ++i)
        want[static_cast<std::size_t>(i)] =
            vx[static_cast<std::size_t>(n - 1 - i)] + vx[static_cast<std::size_t>(i)];
      check_exact(tfm_test::to_vector(x), want);
    }
  }
  {  // rows of a matrix shifted down, columns shifted right
    INFO(backend_name<B>() << " " << tfm::dtype_name<T>() << " 2-D shifts");
    const index_t r = 67, c = 517;  // 34639 elements: above the threaded threshold
    auto m = random_tensor<T, B, 2>({r, c}, g);
    auto vm = copy_out(m);
    tfm::slice<0>(m, 1, r) = tfm::slice<0>(m, 0, r - 1) * 2;
    std::vector<double> want = vm;
    for (index_t i = 1; i < r; ++i)
      for (index_t j = 0; j < c; ++j)
        want[static_cast<std::size_t>(i * c + j)] =
            2 * vm[static_cast<std::size_t>((i - 1) * c + j)];
    check_exact(tfm_test::to_vector(m), want);

    vm = copy_out(m);
    tfm::slice<1>(m, 1, c) = tfm::slice<1>(m, 0, c - 1) - tfm::slice<1>(m, 1, c);
    want = vm;
    for (index_t i = 0; i < r; ++i)
      for (index_t j = 1; j < c; ++j)
        want[static_cast<std::size_t>(i * c + j)] =
            vm[static_cast<std::size_t>(i * c + j - 1)] - vm[static_cast<std::size_t>(i * c + j)];
    check_exact(tfm_test::to_vector(m), want);
  }
  {  // reshape of the destination into another shape of the same size
    INFO(backend_name<B>() << " " << tfm::dtype_name<T>() << " reshape (6, 10) -> (4, 15)");
    auto a = random_tensor<T, B, 2>({6, 10}, g);
    const auto va = copy_out(a);
    a = tfm::reshape(a, tfm::dyn_shape<2>(4, 15)) + 1;
    CHECK(a.shape().extents() == std::array<index_t, 2>{4, 15});
    std::vector<double> want = va;
    for (auto& w : want) w += 1;
    check_exact(tfm_test::to_vector(a), want);
  }
  {  // the destination shrinks to a slice of itself (same first element and strides)
    INFO(backend_name<B>() << " " << tfm::dtype_name<T>() << " a = a[0:2, :]");
    auto a = random_tensor<T, B, 2>({5, 9}, g);
    const auto va = copy_out(a);
    a = tfm::slice<0>(a, 0, 2) * 2;
    CHECK(a.shape().extents() == std::array<index_t, 2>{2, 9});
    std::vector<double> want(va.begin(), va.begin() + 18);
    for (auto& w : want) w *= 2;
    check_exact(tfm_test::to_vector(a), want);
  }
}

// ---- broadcasts reading the destination -----------------------------------------------------

template <class T, class B>
void broadcast_reads(std::mt19937& g) {
  const std::array<std::array<index_t, 2>, 4> shapes{{{2, 3}, {5, 17}, {33, 129}, {131, 257}}};
  for (const auto& ext : shapes) {
    const index_t r = ext[0], c = ext[1];
    INFO(backend_name<B>() << " " << tfm::dtype_name<T>() << " shape " << r << "x" << c);
    {  // m = m + m[0, :]: row 0 is read by every row and written first
      auto m = random_tensor<T, B, 2>(ext, g);
      const auto vm = copy_out(m);
      m = m + tfm::select<0>(m, 0);
      std::vector<double> want(vm.size());
      for (index_t i = 0; i < r; ++i)
        for (index_t j = 0; j < c; ++j)
          want[static_cast<std::size_t>(i * c + j)] =
              vm[static_cast<std::size_t>(i * c + j)] + vm[static_cast<std::size_t>(j)];
      check_exact(tfm_test::to_vector(m), want);
    }
    {  // view destination: v = v - v[:, 0:1] (column 0 is read by its whole row)
      auto m = random_tensor<T, B, 2>(ext, g);
      const auto vm = copy_out(m);
      auto v = m.view();
      v = v - tfm::slice<1>(v, 0, 1);
      std::vector<double> want(vm.size());
      for (index_t i = 0; i < r; ++i)
        for (index_t j = 0; j < c; ++j)
          want[static_cast<std::size_t>(i * c + j)] =
              vm[static_cast<std::size_t>(i * c + j)] - vm[static_cast<std::size_t>(i * c)];
      check_exact(tfm_test::to_vector(m), want);
    }
    {  // broadcast_to of the last row over the whole destination, times the destination
      auto m = random_tensor<T, B, 2>(ext, g);
      const auto vm = copy_out(m);
      auto last = tfm::slice<0>(m, r - 1, r);  // (1, c)
      m = tfm::broadcast_to(last, tfm::dyn_shape<2>(r, c)) * 2 + m;
      std::vector<double> want(vm.size());
      for (index_t i = 0; i < r; ++i)
        for (index_t j = 0; j < c; ++j)
          want[static_cast<std::size_t>(i * c + j)] =
              2 * vm[static_cast<std::size_t>((r - 1) * c + j)] +
              vm[static_cast<std::size_t>(i * c + j)];
      check_exact(tfm_test::to_vector(m), want);
    }
    {  // the destination is itself the broadcast operand and grows: a (1, c) = a + b (r, c)
      auto a = random_tensor<T, B, 2>({1, c}, g);
      auto b = random_tensor<T, B, 2>(ext, g);
      const auto va = copy_out(a), vb = copy_out(b);
      a = a + b;
      CHECK(a.shape().extents() == ext);
      std::vector<double> want(vb.size());
      for (index_t i = 0; i < r; ++i)
        for (index_t j = 0; j < c; ++j)
          want[static_cast<std::size_t>(i * c + j)] =
              va[static_cast<std::size_t>(j)] + vb[static_cast<std::size_t>(i * c + j)];
      check_exact(tfm_test::to_vector(a), want);
    }
  }
}

}  // namespace

TEST_CASE_TEMPLATE("alias: same-position aliasing is evaluated in place and is correct", B,
                   tfm::cpu, tfm::reference) {
  auto g = tfm_test::rng(0xa11a5001);
  SUBCASE("f32") { same_position<float, B>(g); }
  SUBCASE("f64") { same_position<double, B>(g); }
}

TEST_CASE_TEMPLATE("alias: transposed and permuted views of the destination", B, tfm::cpu,
                   tfm::reference) {
  auto g = tfm_test::rng(0xa11a5002);
  SUBCASE("f32") { transposed<float, B>(g); }
  SUBCASE("f64") { transposed<double, B>(g); }
}

TEST_CASE_TEMPLATE("alias: shifted, reversed, reshaped and shrunk views of the destination", B,
                   tfm::cpu, tfm::reference) {
  auto g = tfm_test::rng(0xa11a5003);
  SUBCASE("f32") { shifted<float, B>(g); }
  SUBCASE("f64") { shifted<double, B>(g); }
}

TEST_CASE_TEMPLATE("alias: broadcasts that read the destination", B, tfm::cpu, tfm::reference) {
  auto g = tfm_test::rng(0xa11a5004);
  SUBCASE("f32") { broadcast_reads<float, B>(g); }
  SUBCASE("f64") { broadcast_reads<double, B>(g); }
}

TEST_CASE("alias: bf16 destination read through a transposed view") {
  // Halves take the cpu backend's half-SIMD path; copies are exact, so the result is bitwise.
  auto g = tfm_test::rng(0xa11a5005);
  const index_t n = 65;
  auto a = random_tensor<tfm::bf16, tfm::cpu, 2>({n, n}, g);
  const auto va = tfm_test::to_vector(a);
  a = tfm::transpose(a);
  std::vector<tfm::bf16> want(va.size());
  for (index_t i = 0; i < n; ++i)
    for (index_t j = 0; j < n; ++j)
      want[static_cast<std::size_t>(i * n + j)] = va[static_cast<std::size_t>(j * n + i)];
  TFM_CHECK_BITWISE(tfm_test::to_vector(a), want);
}
