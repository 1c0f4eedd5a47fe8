// Training behaviour: a tiny model overfits one batch to loss < 0.05; the same seed gives a
// bitwise identical loss curve, on 1 and on 2 threads.
#include <doctest/doctest.h>
#include <typeformer/typeformer.hpp>

#include <vector>

using namespace tfm;

namespace {
std::vector<float> curve(int steps, int threads, double lr) {
  thread_scope ts(threads);
  nn::gpt<nn::gpt2_tiny> m(nn::gpt2_tiny{}, 11);
  auto ps = m.parameters();
  optim::adam_options o;
  o.lr = lr;
  auto opt = optim::adamw(ps, o);
  nn::gpt<nn::gpt2_tiny>::ids_type x(4, 32), y(4, 32);
  for (index_t i = 0; i < x.size(); ++i) {
    x.data()[i] = static_cast<std::int32_t>((i * 7 + 3) % 256);
    y.data()[i] = static_cast<std::int32_t>((i * 7 + 10) % 256);
  }
  std::vector<float> losses;
  for (int s = 0; s < steps; ++s) {
    opt.zero_grad();
    auto loss = m.loss(x, y);
    loss.backward();
    optim::clip_grad_norm(ps, 1.0);
    REQUIRE(opt.step());
    losses.push_back(loss.value()());
  }
  return losses;
}
}  // namespace

TEST_CASE("a tiny GPT overfits one batch") {
  MESSAGE("model seed 11");
  auto c = curve(60, 2, 3e-3);
  MESSAGE("loss ", c.front(), " -> ", c.back());
  CHECK(c.front() > 5.0f);
  CHECK(c.back() < 0.05f);
}

TEST_CASE("the loss curve is bitwise reproducible, and the same on 1 and 2 threads") {
  auto a = curve(4, 1, 1e-3), b = curve(4, 1, 1e-3), c = curve(4, 2, 1e-3);
  CHECK(a == b);
  CHECK(a == c);
}
