// nn modules built on their own (nn/layers.hpp, nn/gpt.hpp): constructors with sizes from the
// type and as arguments, parameter names and prefixes, initialisation from the seed (same seed,
// same values; statistics of the draws), the same values as the builder path inside nn::gpt,
// forwards against loops written here (linear, embedding, LayerNorm, RMSNorm, the GELU MLP),
// parameters() driving AdamW, and the shape_error for a size that disagrees with the type.
#include <doctest/doctest.h>
#include <typeformer/typeformer.hpp>

#include <cmath>
#include <cstdint>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

using namespace tfm;

namespace {

/// The names of a parameter list, in order.
template <class T>
std::vector<std::string> names_of(const nn::parameter_list<T>& ps) {
  std::vector<std::string> n;
  for (const auto& p : ps) n.push_back(p.name);
  return n;
}

/// The values of a parameter record as doubles.
template <class T>
std::vector<double> values_of(const detail::var_ptr<T>& d) {
  std::vector<double> v(static_cast<std::size_t>(d->size()));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<double>(d->value.data()[i]);
  return v;
}

/// A (rows, cols) float tensor of uniform values in [-1, 1) from std::mt19937 (seed printed).
tensor<float, shape<dyn, dyn>> random_matrix(index_t rows, index_t cols, std::uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  tensor<float, shape<dyn, dyn>> t(rows, cols);
  for (index_t i = 0; i < t.size(); ++i) t.data()[i] = u(g);
  return t;
}
}  // namespace

TEST_CASE("nn::linear: built on its own with static and dynamic sizes") {
  nn::linear<float, 6, 4> a(/*seed=*/1);
  CHECK(names_of(a.parameters()) == std::vector<std::string>{"weight", "bias"});
  CHECK(a.weight.shape().to_string() == "(4, 6)");
  CHECK(a.bias.shape().to_string() == "(4,)");
  CHECK(a.weight.requires_grad());
  CHECK(a.parameters()[0].decay);
  CHECK(!a.parameters()[1].decay);

  nn::linear<float, 6, 4> nb(1, {.bias = false, .prefix = "fc1"});
  CHECK(names_of(nb.parameters()) == std::vector<std::string>{"fc1.weight"});
  CHECK(!nb.bias.defined());

  nn::linear<double, dyn, dyn> d(6, 4, /*seed=*/1);
  CHECK(d.weight.shape().to_string() == "(4, 6)");
  static_assert(std::is_same_v<decltype(d.weight), var<double, shape<dyn, dyn>>>);
  nn::linear<float, dyn, 4> half_dyn(6, 4, 1, {.prefix = "p"});
  CHECK(names_of(half_dyn.parameters()) == std::vector<std::string>{"p.weight", "p.bias"});

  // Static sizes given as arguments are accepted when they agree with the type.
  nn::linear<float, 6, 4> same(6, 4, 1);
  CHECK(values_of(same.weight.data()) == values_of(a.weight.data()));
}

TEST_CASE("nn modules: initialisation is a function of the seed and the parameter's name") {
  nn::linear<float, 64, 32> a(7), b(7), c(8), p(7, {.prefix = "fc2"});
  CHECK(values_of(a.weight.data()) == values_of(b.weight.data()));
  CHECK(values_of(a.weight.data()) != values_of(c.weight.data()));
  CHECK(values_of(a.weight.data()) != values_of(p.weight.data()));
  for (double v : values_of(a.bias.data())) CHECK(v == 0.0);

  // The default N(0, 0.02) and a chosen N(0, 0.5): the sample moments of 256 x 256 draws lie
  // within 6 standard errors (se(mean) = s / 256, se(std) ~ s / sqrt(2 * 65536)).
  for (double sd : {0.02, 0.5}) {
    nn::linear<double, 256, 256> big(3, {.weight_init = nn::init::normal(sd)});
    auto v = values_of(big.weight.data());
    double m = 0, q = 0;
    for (double x : v) m += x;
    m /= static_cast<double>(v.size());
    for (double x : v) q += (x - m) * (x - m);
    const double s = std::sqrt(q / static_cast<double>(v.size() - 1));
    CHECK(std::abs(m) < 6 * sd / 256);
    CHECK(std::abs(s - sd) < 6 * sd / std::sqrt(2.0 * 65536));
  }
  nn::linear<float, 3, 2> ones(1, {.weight_init = nn::init::ones(), .bias_init = nn::init::ones()});
  for (double v : values_of(ones.weight.data())) CHECK(v == 1.0);
  for (double v : values_of(ones.bias.data())) CHECK(v == 1.0);
}

TEST_CASE("nn modules: a module built alone equals the one nn::gpt builds from the same seed") {
  // Same code path: a layer with prefix "h.1.mlp.c_fc" and the model's seed holds the model's
  // values for that name, bit for bit.
  using cfg = nn::gpt2_tiny;
  nn::gpt<cfg> model(cfg{}, /*seed=*/11);
  std::map<std::string, std::vector<double>> byname;
  for (const auto& p : model.parameters()) byname[p.name] = values_of(p.data);

  nn::linear<float, cfg::n_embd, cfg::ffn> fc(11, {.prefix = "h.1.mlp.c_fc"});
  for (const auto& p : fc.parameters()) CHECK(values_of(p.data) == byname.at(p.name));
  nn::embedding<float, cfg::vocab, cfg::n_embd> wte(11, {.prefix = "wte"});
  CHECK(values_of(wte.weight.data()) == byname.at("wte.weight"));
  nn::norm<float, cfg::n_embd> ln(nn::norm_kind::layer_norm, {.prefix = "h.0.ln_1"});
  CHECK(values_of(ln.weight.data()) == byname.at("h.0.ln_1.weight"));
  CHECK(values_of(ln.bias.data()) == byname.at("h.0.ln_1.bias"));
  // The output projection of a standalone mlp starts at N(0, proj_std) like the model's.
  nn::mlp<float, cfg::n_embd, cfg::ffn> ff(
      11, {.proj_std = nn::residual_std(cfg{}), .prefix = "h.2.mlp"});
  CHECK(names_of(ff.parameters()) ==
        std::vector<std::string>{"h.2.mlp.c_fc.weight", "h.2.mlp.c_fc.bias",
                                 "h.2.mlp.c_proj.weight", "h.2.mlp.c_proj.bias"});
  for (const auto& p : ff.parameters()) CHECK(values_of(p.data) == byname.at(p.name));
  nn::attention_layer<float, cfg> attn(cfg{}, 11, "h.3.attn");
  for (const auto& p : attn.parameters()) CHECK(values_of(p.data) == byname.at(p.name));
  nn::block<float, cfg> blk(cfg{}, 11, "h.0");
  CHECK(blk.parameters().size() == 12);
  for (const auto& p : blk.parameters()) CHECK(values_of(p.data) == byname.at(p.name));
}

TEST_CASE("nn modules: embedding, norm, mlp, attention and block with run-time sizes") {
  nn::embedding<float, dyn, dyn> e(10, 4, /*seed=*/2);
  CHECK(e.weight.shape().to_string() == "(10, 4)");
  CHECK(names_of(e.parameters()) == std::vector<std::string>{"weight"});
  nn::embedding<float, 10, 4> es(2);
  CHECK(values_of(es.weight.data()) == values_of(e.weight.data()));

  nn::norm<float, dyn> rms(8, nn::norm_kind::rms_norm);
  CHECK(names_of(rms.parameters()) == std::vector<std::string>{"weight"});
  nn::norm<float, dyn> ln(8, nn::norm_kind::layer_norm, {.bias = false, .eps = 1e-6});
  CHECK(names_of(ln.parameters()) == std::vector<std::string>{"weight"});
  nn::norm<float, 8> lnb(nn::norm_kind::layer_norm, {.prefix = "ln_f"});
  CHECK(names_of(lnb.parameters()) == std::vector<std::string>{"ln_f.weight", "ln_f.bias"});

  nn::mlp<float, dyn, dyn> sw(8, 12, 3, {.kind = nn::mlp_kind::swiglu, .bias = false});
  CHECK(names_of(sw.parameters()) ==
        std::vector<std::string>{"gate.weight", "up.weight", "down.weight"});

  nn::dynamic_config d;
  d.n_layer = 2;
  d.n_embd = 16;
  d.n_head = 4;
  d.n_kv_head = 2;
  d.ffn = 32;
  d.norm = nn::norm_kind::rms_norm;
  d.mlp = nn::mlp_kind::swiglu;
  d.position = nn::position_kind::rope;
  d.bias = false;
  nn::block<float, nn::dynamic_config> blk(d, 5, "layer");
  CHECK(names_of(blk.parameters()) ==
        std::vector<std::string>{"layer.ln_1.weight", "layer.attn.c_attn.weight",
                                 "layer.attn.c_proj.weight", "layer.ln_2.weight",
                                 "layer.mlp.gate.weight", "layer.mlp.up.weight",
                                 "layer.mlp.down.weight"});
  // c_attn projects to (H + 2G) D = (4 + 4) * 4 values.
  CHECK(blk.attn.c_attn.weight.shape().to_string() == "(32, 16)");
  auto x = constant(randn<float>(shape<dyn, dyn, dyn>(2, 3, 16), /*seed=*/9));
  auto y = blk(x);
  CHECK(y.shape().to_string() == "(2, 3, 16)");
  for (index_t i = 0; i < y.size(); ++i) CHECK(std::isfinite(y.value().data()[i]));
  auto a = blk.attn(x);
  CHECK(a.shape().to_string() == "(2, 3, 16)");
  // A bad config is reported before anything is built.
  d.n_head = 3;
  CHECK_THROWS_AS((nn::block<float, nn::dynamic_config>(d, 5)), tfm::value_error);
}

TEST_CASE("nn::linear forward equals x W^T + b computed with loops") {
  const std::uint32_t seed = 20240611;
  MESSAGE("seed " << seed);
  nn::linear<double, 5, 3> fc(4, {.weight_init = nn::init::normal(0.7)});
  // A non-zero bias, so that the check sees it.
  for (index_t o = 0; o < 3; ++o) fc.bias.mutable_value()(o) = 0.1 * static_cast<double>(o + 1);
  auto xf = random_matrix(7, 5, seed);
  tensor<double, shape<dyn, 5>> x(7);
  for (index_t i = 0; i < 7; ++i)
    for (index_t k = 0; k < 5; ++k) x(i, k) = xf(i, k);
  auto y = fc(constant(x));
  static_assert(std::is_same_v<decltype(y), var<double, shape<dyn, 3>>>);
  auto W = fc.weight.value();
  auto b = fc.bias.value();
  for (index_t i = 0; i < 7; ++i)
    for (index_t o = 0; o < 3; ++o) {
      double r = b(o);
      for (index_t k = 0; k < 5; ++k) r += x(i, k) * W(o, k);
      CHECK(y.value()(i, o) == doctest::Approx(r).epsilon(1e-12));
    }
}

TEST_CASE("nn::embedding, nn::norm and nn::mlp forwards equal loops") {
  const std::uint32_t seed = 777;
  MESSAGE("seed " << seed);
  // Embedding: row ids of the table.
  nn::embedding<float, 6, 3> e(1);
  tensor<std::int32_t, shape<dyn>> ids(4);
  const std::int32_t idv[] = {5, 0, 5, 2};
  for (index_t i = 0; i < 4; ++i) ids(i) = idv[i];
  auto rows = e(ids);
  for (index_t i = 0; i < 4; ++i)
    for (index_t c = 0; c < 3; ++c) CHECK(rows.value()(i, c) == e.weight.value()(idv[i], c));

  // LayerNorm and RMSNorm with a non-trivial weight and bias.
  const index_t R = 5, C = 8;
  auto xf = random_matrix(R, C, seed);
  tensor<double, shape<dyn, dyn>> x(R, C);
  for (index_t i = 0; i < x.size(); ++i) x.data()[i] = 3.0 * xf.data()[i] + 1.0;
  nn::norm<double, dyn> ln(C, nn::norm_kind::layer_norm, {.eps = 1e-5});
  nn::norm<double, dyn> rms(C, nn::norm_kind::rms_norm, {.eps = 1e-6});
  for (index_t c = 0; c < C; ++c) {
    ln.weight.mutable_value()(c) = 0.5 + 0.1 * static_cast<double>(c);
    ln.bias.mutable_value()(c) = -0.2 * static_cast<double>(c);
    rms.weight.mutable_value()(c) = 1.5 - 0.1 * static_cast<double>(c);
  }
  auto yl = ln(constant(x));
  auto yr = rms(constant(x));
  for (index_t i = 0; i < R; ++i) {
    double mean = 0, ms = 0;
    for (index_t c = 0; c < C; ++c) mean += x(i, c) / C;
    double variance = 0;
    for (index_t c = 0; c < C; ++c) {
      variance += (x(i, c) - mean) * (x(i, c) - mean) / C;
      ms += x(i, c) * x(i, c) / C;
    }
    for (index_t c = 0; c < C; ++c) {
      const double rl =
          (x(i, c) - mean) / std::sqrt(variance + 1e-5) * ln.weight.value()(c) + ln.bias.value()(c);
      const double rr = x(i, c) / std::sqrt(ms + 1e-6) * rms.weight.value()(c);
      CHECK(yl.value()(i, c) == doctest::Approx(rl).epsilon(1e-10));
      CHECK(yr.value()(i, c) == doctest::Approx(rr).epsilon(1e-10));
    }
  }

  // The GELU MLP: c_proj(gelu_tanh(c_fc(x))), GELU's tanh form (Hendrycks & Gimpel,
  // arXiv:1606.08415) written out here.
  const index_t F = 6;
  nn::mlp<double, dyn, dyn> ff(C, F, 2, {.proj_std = 0.3});
  auto y = ff(constant(x));
  auto ps = ff.parameters();  // c_fc.weight (F, C), c_fc.bias, c_proj.weight (C, F), c_proj.bias
  REQUIRE(names_of(ps) ==
          std::vector<std::string>{"c_fc.weight", "c_fc.bias", "c_proj.weight", "c_proj.bias"});
  const double* W1 = ps[0].data->value.data();
  const double* W2 = ps[2].data->value.data();
  for (index_t i = 0; i < R; ++i) {
    std::vector<double> h(static_cast<std::size_t>(F));
    for (index_t f = 0; f < F; ++f) {
      double a = 0;  // zero biases
      for (index_t c = 0; c < C; ++c) a += x(i, c) * W1[f * C + c];
      const double k = std::sqrt(2.0 / 3.141592653589793);
      h[static_cast<std::size_t>(f)] = 0.5 * a * (1 + std::tanh(k * (a + 0.044715 * a * a * a)));
    }
    for (index_t c = 0; c < C; ++c) {
      double r = 0;
      for (index_t f = 0; f < F; ++f) r += h[static_cast<std::size_t>(f)] * W2[c * F + f];
      CHECK(y.value()(i, c) == doctest::Approx(r).epsilon(1e-10));
    }
  }
}

namespace {
// The program of docs/nn.md "A tiny MLP from modules", as a test.
struct tiny_mlp : nn::module_base<float, tiny_mlp> {
  nn::linear<float, 2, 16> fc1{1, {.weight_init = nn::init::normal(0.5), .prefix = "fc1"}};
  nn::linear<float, 16, 2> fc2{1, {.weight_init = nn::init::normal(0.5), .prefix = "fc2"}};
  auto operator()(const var<float, shape<dyn, 2>>& x) const { return fc2(relu(fc1(x))); }
  void collect(nn::parameter_list<float>& out) const {
    fc1.collect(out);
    fc2.collect(out);
  }
};
}  // namespace

TEST_CASE("nn modules: parameters() drive AdamW and the loss of a 2-layer MLP falls") {
  tiny_mlp model;
  CHECK(names_of(model.parameters()) ==
        std::vector<std::string>{"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"});
  const index_t n = 256;
  auto x = rand_uniform<float>(shape<dyn, 2>(n), /*seed=*/7, -1.0f, 1.0f);
  tensor<std::int32_t, shape<dyn>> y(n);
  for (index_t i = 0; i < n; ++i) y(i) = x(i, 0) * x(i, 1) > 0 ? 1 : 0;
  auto inputs = constant(x);
  auto opt = optim::adamw(model.parameters(), {.lr = 0.05});
  std::vector<float> losses;
  for (int step = 0; step < 200; ++step) {
    opt.zero_grad();
    auto loss = cross_entropy(model(inputs), y);
    loss.backward();
    REQUIRE(opt.step());
    losses.push_back(loss.item());
  }
  MESSAGE("loss " << losses.front() << " -> " << losses.back());
  CHECK(losses.front() == doctest::Approx(std::log(2.0)).epsilon(0.2));  // near chance
  CHECK(losses.back() < 0.1f * losses.front());
}

TEST_CASE("nn modules: a size that disagrees with a static extent is a shape_error") {
  CHECK_THROWS_WITH_AS((nn::linear<float, 4, 3>(nn::builder{1, "fc"}, 5, 3, true)),
                       "tfm::nn::linear<T, 4, 3>: in_features is 5 but the type fixes it to 4.",
                       tfm::shape_error);
  CHECK_THROWS_WITH_AS((nn::linear<float, 4, 3>(4, 2, 1)),
                       "tfm::nn::linear<T, 4, 3>: out_features is 2 but the type fixes it to 3.",
                       tfm::shape_error);
  CHECK_THROWS_WITH_AS((nn::linear<float, dyn, dyn>(-1, 2, 1)),
                       "tfm::nn::linear<T, dyn, dyn>: in_features must be >= 0, got -1.",
                       tfm::shape_error);
  CHECK_THROWS_WITH_AS((nn::embedding<float, 256, dyn>(255, 8, 1)),
                       "tfm::nn::embedding<T, 256, dyn>: num_embeddings is 255 but the type fixes "
                       "it to 256.",
                       tfm::shape_error);
  CHECK_THROWS_WITH_AS((nn::norm<float, 8>(9, nn::norm_kind::rms_norm)),
                       "tfm::nn::norm<T, 8>: features is 9 but the type fixes it to 8.",
                       tfm::shape_error);
  CHECK_THROWS_WITH_AS((nn::mlp<float, 8, 32>(8, 16, 1)),
                       "tfm::nn::mlp<T, 8, 32>: hidden is 16 but the type fixes it to 32.",
                       tfm::shape_error);
  // A static config whose n_embd disagrees with a dynamic one passed to the builder path.
  nn::dynamic_config d = nn::to_dynamic(nn::gpt2_tiny{});
  d.n_embd = 64;
  CHECK_THROWS_AS((nn::norm<float, nn::gpt2_tiny::n_embd>(nn::builder{1, "ln"}, d.n_embd, d.norm,
                                                          d.bias, d.norm_eps)),
                  tfm::shape_error);
}

TEST_CASE("var: item(), the rank-0 conversion and printing") {
  auto w = parameter(tensor<float, shape<3>>{1, 2, 3});
  auto loss = sum(w * w);  // var<float, shape<>> = 14
  CHECK(loss.item() == 14.0f);
  CHECK(static_cast<float>(loss) == 14.0f);
  static_assert(!std::is_convertible_v<var<float, shape<>>, float>);
  std::ostringstream os;
  os << "loss " << loss << "\n";
  CHECK(os.str() == "loss 14\n");
  std::ostringstream ws;
  ws << w;
  CHECK(ws.str() == "tensor<f32> (3,)\n[1, 2, 3]\n");
  std::ostringstream es;
  es << var<float, shape<>>();
  CHECK(es.str() == "var(empty)");
  const var<float, shape<>> empty;
  CHECK_THROWS_AS(empty.item(), tfm::value_error);

  // One element in a rank-2 var; several in a dynamic one: a shape_error naming the shape.
  auto one = constant(tensor<double, shape<1, 1>>{{2.5}});
  CHECK(one.item() == 2.5);
  auto dm = constant(tensor<double, shape<dyn, dyn>>(2, 2));
  CHECK_THROWS_WITH_AS(dm.item(),
                       "tfm::var: item() needs exactly one element, but the shape (2, 2) holds 4; "
                       "read an element with value()(i, ...) instead.",
                       tfm::shape_error);
  auto h = parameter(tensor<bf16, shape<>>());
  static_assert(std::is_same_v<decltype(h.item()), bf16>);
  CHECK(static_cast<float>(h.item()) == 0.0f);
}
