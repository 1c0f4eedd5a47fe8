// tfm::tensor<Block, Shape> (quant/tensor.hpp), matmul(x, transpose(w)) (ops/quant_matmul.hpp)
// and io::block_view (io/gguf_blocks.hpp).
//   - quantize<B>(x) holds the bytes of tfm::quantize(type, x, rows, cols) and dequantize()
//     the floats of tfm::dequantize(type, bytes), bit for bit (both byte-level functions are
//     checked against gguf-py in tests/unit/quant);
//   - matmul(x, transpose(w)) against an f64 product of x with the dequantized weights (written
//     here with plain loops) and against tfm::matmul(x, transpose(dequantize(w))): NMSE <= 5e-4
//     (TESTING.md, matmul); the integer-dot GEMV (M == 1, legacy formats) differs from them by the
//     8-bit rounding of x, the other paths by float rounding only;
//   - a view over a GGUF file written by io::gguf_writer points into the mapping and multiplies
//     to the same bits as the owning tensor; wrong types and shapes raise errors naming them.
#include "typeformer/io/gguf_blocks.hpp"
#include "typeformer/ops/quant_matmul.hpp"
#include "typeformer/quant/tensor.hpp"

#include "tfm_test.hpp"

#include <doctest/doctest.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

#if defined(__unix__)
#include <unistd.h>
#endif

namespace {

using tfm::dyn;
using tfm::index_t;

template <class B>
constexpr index_t qk = static_cast<index_t>(tfm::block_traits<B>::block_elements);

// Static facts of the type system.
using w_static = tfm::tensor<tfm::block_q4_0, tfm::shape<8, 64>>;
static_assert(!tfm::dense_type<w_static> && !tfm::tensor_type<w_static>);
static_assert(tfm::quantized_tensor_type<w_static>);
static_assert(tfm::quantized_view_type<tfm::tensor_view<const tfm::block_q4_0, tfm::dyn_shape<2>>>);
static_assert(!tfm::dense_type<tfm::tensor_view<const tfm::block_q4_0, tfm::dyn_shape<2>>>);
static_assert(std::is_same_v<decltype(tfm::transpose(std::declval<const w_static&>()))::shape_type,
                             tfm::shape<64, 8>>);
static_assert(std::is_same_v<
              decltype(tfm::matmul(std::declval<const tfm::tensor<float, tfm::shape<3, 64>>&>(),
                                   tfm::transpose(std::declval<const w_static&>()))),
              tfm::tensor<float, tfm::shape<3, 8>>>);
// A static block tensor with inline storage holds its blocks and nothing else (no heap).
static_assert(
    sizeof(tfm::tensor<tfm::block_q8_0, tfm::shape<2, 64>, tfm::cpu, tfm::inline_storage>) >=
    4 * sizeof(tfm::block_q8_0));

std::vector<float> random_floats(std::mt19937& g, std::size_t n) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = nd(g);
  return v;
}

template <class T>
void fill(T& t, const std::vector<float>& v) {
  REQUIRE(static_cast<std::size_t>(t.size()) == v.size());
  std::memcpy(t.data(), v.data(), v.size() * sizeof(float));
}

template <class T>
std::vector<float> elements(const T& t) {
  return tfm_test::to_vector(t);
}

/// y(m, n) = sum_k x(m, k) * wd(n, k) in f64 (wd: the dequantized weights, N x K row-major).
std::vector<double> reference_product(const std::vector<float>& x, const std::vector<float>& wd,
                                      index_t M, index_t N, index_t K) {
  std::vector<double> y(static_cast<std::size_t>(M * N));
  for (index_t m = 0; m < M; ++m)
    for (index_t n = 0; n < N; ++n) {
      double s = 0;
      for (index_t k = 0; k < K; ++k)
        s += static_cast<double>(x[static_cast<std::size_t>(m * K + k)]) *
             wd[static_cast<std::size_t>(n * K + k)];
      y[static_cast<std::size_t>(m * N + n)] = s;
    }
  return y;
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const tfm::error& e) {
    return e.what();
  }
  return "(no exception)";
}

}  // namespace

#define QUANT_BLOCKS tfm::block_q4_0, tfm::block_q4_1, tfm::block_q8_0, tfm::block_q4_K

TEST_CASE_TEMPLATE("quantize<B> and dequantize equal the byte-level reference", B, QUANT_BLOCKS) {
  constexpr index_t K = 2 * qk<B>, N = 3;
  constexpr auto type = tfm::block_traits<B>::type;
  auto g = tfm_test::rng(0x19b0 + qk<B>);
  const auto v = random_floats(g, N * K);
  tfm::tensor<float, tfm::shape<N, K>> x;
  fill(x, v);

  auto w = tfm::quantize<B>(x, "x");
  static_assert(std::is_same_v<decltype(w), tfm::tensor<B, tfm::shape<N, K>>>);
  CHECK(w.shape().extent(0) == N);
  CHECK(w.shape().extent(1) == K);
  CHECK(w.size() == N * K);
  CHECK(w.rows() == N);
  CHECK(w.blocks_per_row() == 2);
  CHECK(w.blocks().size() == 6);
  CHECK(w.row(1).data() == w.data() + 2);
  CHECK(w.row(2).size() == 2);
  CHECK_THROWS_AS((void)w.row(3), tfm::index_error);

  const auto want = tfm::quantize(type, v, N, K, "x");
  REQUIRE(w.bytes().size() == want.size());
  CHECK(std::memcmp(w.bytes().data(), want.data(), want.size()) == 0);

  // The explicit constructor quantizes too.
  tfm::tensor<B, tfm::shape<N, K>> w2(x);
  CHECK(std::memcmp(w2.bytes().data(), want.data(), want.size()) == 0);

  // dequantize() (member and free) bit for bit tfm::dequantize of the bytes.
  const auto deq = tfm::dequantize(type, std::span<const std::byte>(want));
  tfm::tensor<float, tfm::shape<N, K>> d = tfm::dequantize(w);
  CHECK(tfm_test::bitwise_diff(elements(d), deq) == "");
  CHECK(tfm_test::bitwise_diff(elements(w.view().dequantize()), deq) == "");

  // A transposed (strided) float view quantizes like its contiguous copy.
  tfm::tensor<float, tfm::shape<K, N>> xt;
  for (index_t r = 0; r < N; ++r)
    for (index_t c = 0; c < K; ++c) xt(c, r) = v[static_cast<std::size_t>(r * K + c)];
  auto wt = tfm::quantize<B>(tfm::transpose(xt));
  CHECK(std::memcmp(wt.bytes().data(), want.data(), want.size()) == 0);

  // Dynamic shapes; inline storage.
  tfm::tensor<float, tfm::dyn_shape<2>> xd(N, K);
  fill(xd, v);
  auto wd = tfm::quantize<B>(xd);
  static_assert(std::is_same_v<decltype(wd), tfm::tensor<B, tfm::dyn_shape<2>>>);
  CHECK(std::memcmp(wd.bytes().data(), want.data(), want.size()) == 0);
  tfm::tensor<B, tfm::shape<N, K>, tfm::cpu, tfm::inline_storage> wi(x);
  CHECK(std::memcmp(wi.bytes().data(), want.data(), want.size()) == 0);

  // Default construction: zero blocks, which dequantize to zeros.
  tfm::tensor<B, tfm::shape<N, K>> z;
  for (float e : elements(z.dequantize())) CHECK(e == 0.0f);
}

TEST_CASE("a dynamic K that is not a whole number of blocks raises shape_error") {
  using W = tfm::tensor<tfm::block_q4_0, tfm::dyn_shape<2>>;
  CHECK_THROWS_AS(W(4, 48), tfm::shape_error);
  const std::string m = message_of([] { W w(4, 48); });
  CHECK(m.find("K = 48") != std::string::npos);
  CHECK(m.find("Q4_0") != std::string::npos);
  CHECK(m.find("32") != std::string::npos);

  tfm::tensor<float, tfm::dyn_shape<2>> x(2, 64);
  const std::string mk = message_of([&] { (void)tfm::quantize<tfm::block_q4_K>(x); });
  CHECK(mk.find("K = 64") != std::string::npos);
  CHECK(mk.find("Q4_K") != std::string::npos);

  // A static K met by a float tensor of another K: the static extent names the mismatch.
  tfm::tensor<float, tfm::dyn_shape<2>> x96(2, 96);
  CHECK_THROWS_AS((tfm::tensor<tfm::block_q4_0, tfm::shape<dyn, 64>>(x96)), tfm::shape_error);

  // NaN is refused naming the tensor and position (quantize_row).
  tfm::tensor<float, tfm::shape<2, 32>> xn;
  xn(1, 5) = std::nanf("");
  const std::string mn = message_of([&] { (void)tfm::quantize<tfm::block_q8_0>(xn, "wq"); });
  CHECK(mn.find("'wq' row 1 column 5") != std::string::npos);
}

namespace {

template <class B, class XT, class W>
void check_product(const XT& x, const W& w, index_t M, index_t N, index_t K) {
  CAPTURE(M);
  CAPTURE(N);
  CAPTURE(K);
  const auto y = tfm::matmul(x, tfm::transpose(w));
  REQUIRE(y.size() == M * N);
  const auto xv = elements(x);
  const auto wd = elements(tfm::dequantize(w));
  const auto want = reference_product(xv, wd, M, N, K);
  const double e = tfm_test::nmse(elements(y), want);
  MESSAGE(tfm::ggml_type_name(tfm::block_traits<B>::type)
          << " M=" << M << " N=" << N << " K=" << K << ": NMSE vs f64 " << e);
  CHECK(e <= 5e-4);
  // The float matmul of x with the dequantized weights.
  const auto deq = tfm::dequantize(w);
  const auto yf = tfm::matmul(x, tfm::transpose(deq));
  CHECK(tfm_test::nmse(elements(y), elements(yf)) <= 5e-4);
  const bool int_dot = M == 1 && tfm::cpu_kernels::q8_dot_weight<B>;
  if (!int_dot) CHECK(tfm_test::nmse(elements(y), want) <= 1e-10);  // float rounding only
  // The kernel chosen by the block type: the same bits as calling it directly.
  std::vector<float> yk(static_cast<std::size_t>(M * N));
  if constexpr (tfm::cpu_kernels::q8_dot_weight<B>) {
    if (M == 1) {
      tfm::cpu_kernels::q8_activations scratch;
      tfm::cpu_kernels::gemv_q(N, K, w.data(), w.row_stride(), xv.data(), yk.data(), scratch);
    }
  }
  if (!int_dot)
    tfm::cpu_kernels::gemm_dq_bt(M, N, K, xv.data(), K, w.data(), w.row_stride(), yk.data(), N);
  CHECK(tfm_test::bitwise_diff(elements(y), yk) == "");
}

template <class B, index_t M, index_t N, index_t K>
void check_static(std::mt19937& g) {
  tfm::tensor<float, tfm::shape<M, K>> x;
  fill(x, random_floats(g, M * K));
  tfm::tensor<float, tfm::shape<N, K>> wf;
  fill(wf, random_floats(g, N * K));
  const auto w = tfm::quantize<B>(wf);
  static_assert(std::is_same_v<decltype(tfm::matmul(x, tfm::transpose(w))),
                               tfm::tensor<float, tfm::shape<M, N>>>);
  check_product<B>(x, w, M, N, K);
}

}  // namespace

TEST_CASE_TEMPLATE("matmul(x, transpose(w)) against the dequantized product", B, QUANT_BLOCKS) {
  constexpr index_t Q = qk<B>;
  auto g = tfm_test::rng(0x19c0 + Q);
  check_static<B, 1, 7, 4 * Q>(g);
  check_static<B, 5, 9, 3 * Q>(g);
  for (index_t M : {index_t(1), index_t(3), index_t(17)}) {
    const index_t N = 13, K = (Q == 32 ? 7 : 2) * Q;
    tfm::tensor<float, tfm::dyn_shape<2>> x(M, K), wf(N, K);
    fill(x, random_floats(g, static_cast<std::size_t>(M * K)));
    fill(wf, random_floats(g, static_cast<std::size_t>(N * K)));
    const auto w = tfm::quantize<B>(wf);
    check_product<B>(x, w, M, N, K);
    check_product<B>(x, w.view(), M, N, K);
  }
}

TEST_CASE("matmul with block weights: batch axes, strided x, reference backend, errors") {
  auto g = tfm_test::rng(0x19d0);
  constexpr index_t K = 64, N = 6;
  tfm::tensor<float, tfm::shape<N, K>> wf;
  fill(wf, random_floats(g, N * K));
  const auto w = tfm::quantize<tfm::block_q4_1>(wf);
  const auto wdq = w.dequantize();

  // (2, 3, K) x W^T -> (2, 3, N): the batch folds into the rows.
  tfm::tensor<float, tfm::shape<2, 3, K>> x3;
  fill(x3, random_floats(g, 2 * 3 * K));
  auto y3 = tfm::matmul(x3, tfm::transpose(w));
  static_assert(std::is_same_v<decltype(y3), tfm::tensor<float, tfm::shape<2, 3, N>>>);
  CHECK(tfm_test::nmse(elements(y3), elements(tfm::matmul(x3, tfm::transpose(wdq)))) <= 1e-10);

  // x a transposed view (column stride != 1): copied once, same product.
  tfm::tensor<float, tfm::shape<K, 4>> xt;
  fill(xt, random_floats(g, K * 4));
  auto ys = tfm::matmul(tfm::transpose(xt), tfm::transpose(w));
  auto xc = tfm::eval(tfm::transpose(xt));
  CHECK(tfm_test::bitwise_diff(elements(ys), elements(tfm::matmul(xc, tfm::transpose(w)))) == "");

  // The reference backend: dequantize rows, float sums.
  tfm::tensor<float, tfm::shape<3, K>, tfm::reference> xr;
  fill(xr, random_floats(g, 3 * K));
  auto yr = tfm::matmul(xr, tfm::transpose(w));
  static_assert(std::is_same_v<decltype(yr), tfm::tensor<float, tfm::shape<3, N>, tfm::reference>>);
  CHECK(tfm_test::nmse(elements(yr), reference_product(elements(xr), elements(wdq), 3, N, K)) <=
        1e-10);

  // An expression operand is evaluated once; a view of mutable blocks works like a const one.
  CHECK(tfm_test::bitwise_diff(elements(tfm::matmul(xr * 1.0f, tfm::transpose(w))),
                               elements(tfm::matmul(tfm::eval(xr * 1.0f), tfm::transpose(w)))) ==
        "");
  auto wm = w;
  tfm::tensor_view<tfm::block_q4_1, tfm::shape<N, K>> wmv = wm.view();
  CHECK(tfm_test::bitwise_diff(elements(tfm::matmul(x3, tfm::transpose(wmv))), elements(y3)) == "");

  // transpose(transpose(w)) is w again.
  CHECK(tfm::transpose(tfm::transpose(w)).data() == w.data());

  // Dynamic inner extents differ.
  tfm::tensor<float, tfm::dyn_shape<2>> xb(2, 96);
  const std::string m = message_of([&] { (void)tfm::matmul(xb, tfm::transpose(w)); });
  CHECK(m.find("inner extents differ") != std::string::npos);
  CHECK(m.find("(2, 96)") != std::string::npos);
  CHECK(m.find("Q4_1") != std::string::npos);

  // Empty products.
  tfm::tensor<float, tfm::dyn_shape<2>> x0(0, K);
  CHECK(tfm::matmul(x0, tfm::transpose(w)).size() == 0);
}

TEST_CASE("io::block_view: GGUF tensors as block views without copying") {
  auto g = tfm_test::rng(0x19e0);
  constexpr index_t N = 8, K = 128;
  tfm::tensor<float, tfm::shape<N, K>> wf;
  fill(wf, random_floats(g, N * K));
  const auto w4 = tfm::quantize<tfm::block_q4_0>(wf);
  const auto w8 = tfm::quantize<tfm::block_q8_0>(wf);
#if defined(__unix__)
  const long pid = static_cast<long>(::getpid());
#else
  const long pid = 0;
#endif
  const auto path = std::filesystem::temp_directory_path() /
                    ("tfm_quant_tensor_" + std::to_string(pid) + ".gguf");
  {
    tfm::io::gguf_writer out(path.string());
    out.add("general.architecture", "test");
    out.add_tensor("blk.0.w4", {K, N}, tfm::ggml_type::q4_0, w4.bytes());
    out.add_tensor("blk.0.w8", {K, N}, tfm::ggml_type::q8_0, w8.bytes());
    out.add_tensor("norm", {K}, tfm::ggml_type::f32,
                   std::as_bytes(std::span<const float>(wf.data(), static_cast<std::size_t>(K))));
    out.finish();
  }
  {
    const tfm::io::gguf_file f(path.string());
    const auto v = tfm::io::block_view<tfm::block_q4_0>(f, "blk.0.w4");
    static_assert(std::is_same_v<decltype(v),
                                 const tfm::tensor_view<const tfm::block_q4_0, tfm::dyn_shape<2>>>);
    const auto* lo = reinterpret_cast<const std::byte*>(v.data());
    CHECK(lo >= f.bytes().data());
    CHECK(lo + v.blocks().size_bytes() <= f.bytes().data() + f.bytes().size());
    CHECK(v.extent(0) == N);
    CHECK(v.extent(1) == K);
    CHECK(std::memcmp(v.data(), w4.data(), w4.bytes().size()) == 0);

    // The same product as the owning tensor, bit for bit (M == 1 and M > 1).
    for (index_t M : {index_t(1), index_t(4)}) {
      tfm::tensor<float, tfm::dyn_shape<2>> x(M, K);
      fill(x, random_floats(g, static_cast<std::size_t>(M * K)));
      CHECK(tfm_test::bitwise_diff(elements(tfm::matmul(x, tfm::transpose(v))),
                                   elements(tfm::matmul(x, tfm::transpose(w4)))) == "");
    }
    const auto v8 = tfm::io::block_view<tfm::block_q8_0>(f, "blk.0.w8");
    CHECK(tfm_test::bitwise_diff(elements(v8.dequantize()), elements(w8.dequantize())) == "");

    // Wrong block type: a value_error naming the file's tensor and both types.
    CHECK_THROWS_AS((void)tfm::io::block_view<tfm::block_q4_0>(f, "blk.0.w8"), tfm::value_error);
    const std::string m =
        message_of([&] { (void)tfm::io::block_view<tfm::block_q4_0>(f, "blk.0.w8"); });
    CHECK(m.find("'blk.0.w8'") != std::string::npos);
    CHECK(m.find("is Q8_0, not Q4_0") != std::string::npos);
    // Not a matrix; absent.
    CHECK(message_of([&] {
            (void)tfm::io::block_view<tfm::block_q4_0>(f, "norm");
          }).find("'norm' is F32") != std::string::npos);
    CHECK_THROWS_AS((void)tfm::io::block_view<tfm::block_q4_0>(f, "nope"), tfm::error);

    // from_bytes checks size and type too.
    using V = tfm::tensor_view<const tfm::block_q4_0, tfm::dyn_shape<2>>;
    CHECK_THROWS_AS(
        V::from_bytes(w4.bytes().first(18), tfm::dyn_shape<2>(N, K), tfm::ggml_type::q4_0, "short"),
        tfm::value_error);
  }
  std::filesystem::remove(path);
}
