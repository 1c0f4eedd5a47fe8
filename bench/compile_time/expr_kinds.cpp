// bench/compile_time/expr_kinds.cpp
//
// Compile-time bench: one translation unit that includes typeformer/core.hpp and instantiates
// 20 kinds of expressions on float tensors (elementwise trees of several depths, broadcasts,
// views, reductions), each evaluated by the cpu backend. run.sh times its compilation (goal:
// <= 10 s at -O2 -march=native); CMake builds it as an ordinary executable so CI compiles it.
// Running it prints one checksum per kind (a smoke check that every instantiation works).
#include "typeformer/core.hpp"

#include <cstdio>

namespace {

using tfm::dyn;
using tfm::index_t;
using vec = tfm::tensor<float, tfm::shape<dyn>>;
using mat = tfm::tensor<float, tfm::shape<dyn, 64>>;
using cube = tfm::tensor<float, tfm::shape<4, dyn, 16>>;
using small = tfm::tensor<float, tfm::shape<8, 8>>;

double checksum(const float* p, index_t n) {
  double s = 0;
  for (index_t i = 0; i < n; ++i) s += static_cast<double>(p[i]) * static_cast<double>(i % 7 + 1);
  return s;
}
template <class T>
void report(int kind, const char* what, const T& t) {
  std::printf("%2d %-34s %.6g\n", kind, what, checksum(t.data(), t.size()));
}
void report_scalar(int kind, const char* what, double v) {
  std::printf("%2d %-34s %.6g\n", kind, what, v);
}

}  // namespace

int main() {
  const index_t n = 1000, rows = 24;
  vec a = tfm::rand_uniform<float>(tfm::shape<dyn>(n), 1, -2.0f, 2.0f);
  vec b = tfm::rand_uniform<float>(tfm::shape<dyn>(n), 2, -2.0f, 2.0f);
  vec c = tfm::rand_uniform<float>(tfm::shape<dyn>(n), 3, 0.5f, 2.0f);
  mat m = tfm::randn<float>(tfm::shape<dyn, 64>(rows), 4);
  mat m2 = tfm::randn<float>(tfm::shape<dyn, 64>(rows), 5);
  tfm::tensor<float, tfm::shape<64>> bias = tfm::randn<float>(tfm::shape<64>{}, 6);
  cube x = tfm::randn<float>(tfm::shape<4, dyn, 16>(10), 7);
  small s = tfm::randn<float>(tfm::shape<8, 8>{}, 8);

  // ---- elementwise trees ----
  vec y;
  y = a + b;
  report(1, "a + b", y);
  y = a * b + c;
  report(2, "a * b + c", y);
  y = tfm::gelu(a * b + c);
  report(3, "gelu(a * b + c)", y);
  y = tfm::exp(a) * b - tfm::log(c);
  report(4, "exp(a) * b - log(c)", y);
  y = tfm::where(a > 0.0f, a, 0.01f * a);
  report(5, "where(a > 0, a, 0.01 a)", y);
  y = tfm::sqrt(tfm::abs(a)) / (1.0f + tfm::square(b));
  report(6, "sqrt(|a|) / (1 + b^2)", y);
  y = tfm::sigmoid(a) * tfm::silu(b) + tfm::tanh(c) * tfm::gelu_erf(a);
  report(7, "sigmoid(a) silu(b) + tanh(c) gelu_erf(a)", y);
  y = tfm::maximum(a, b) - tfm::minimum(a, c) + tfm::pow(c, 1.5f) * tfm::rsqrt(c);
  report(8, "max(a,b) - min(a,c) + c^1.5 rsqrt(c)", y);
  // A deep tree: the fusion depth grows with each level.
  y = ((((a + b) * c - a) * b + c) * a - b) * c + tfm::relu(a - b) * tfm::normal_cdf(c);
  report(9, "depth-7 polynomial tree", y);

  // ---- broadcasts and views ----
  mat ym;
  ym = m + bias;
  report(10, "m + bias (row broadcast)", ym);
  ym =
      (m - tfm::mean<1>(m, tfm::keepdims)) * tfm::rsqrt(tfm::mean<1>(m * m, tfm::keepdims) + 1e-5f);
  report(11, "row normalise (reductions + bcast)", ym);
  small ys;
  ys = tfm::transpose(s) * 2.0f + s;
  report(12, "transpose(s) * 2 + s (static)", ys);
  tfm::tensor<float, tfm::shape<dyn, 64>> sl = tfm::slice<0>(m, 2, 10) * tfm::slice<0>(m2, 4, 12);
  report(13, "slice(m) * slice(m2)", sl);
  tfm::tensor<float, tfm::shape<64>> row = tfm::select<0>(m, 3) + tfm::select<0>(m2, 5) * bias;
  report(14, "select(m) + select(m2) * bias", row);
  tfm::tensor<float, tfm::shape<16, dyn, 4>> xp = tfm::permute<2, 1, 0>(x) * 0.5f;
  report(15, "permute<2,1,0>(x) * 0.5 (rank 3)", xp);
  tfm::tensor<float, tfm::shape<dyn, 16>> xr = tfm::reshape(x, tfm::shape<dyn, 16>(40)) + 1.0f;
  report(16, "reshape(x) + 1", xr);

  // ---- reductions ----
  auto r1 = tfm::sum<1>(m * m2);
  report(17, "sum<1>(m * m2)", r1);
  auto r2 = tfm::max<-1>(tfm::exp(x));
  report(18, "max<-1>(exp(x)) (rank 3)", r2);
  auto r3 = tfm::logsumexp<1>(m);
  report(19, "logsumexp<1>(m)", r3);
  auto r4 = tfm::argmax<1>(m + bias);
  double am = 0;
  for (index_t i = 0; i < r4.size(); ++i) am += r4.data()[i];
  report_scalar(20, "argmax<1>(m + bias) + sum(tanh(a))", am + tfm::sum(tfm::tanh(a)));
  return 0;
}
