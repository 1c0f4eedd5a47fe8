// Training checkpoints (train/trainer.hpp on io/checkpoint.hpp): a round trip restores
// parameters, optimizer state, counters, curve and config exactly; every flipped byte of the
// index and a sample of flipped payload bytes, and every truncation point class, are rejected
// with tfm::parse_error without touching the model.
#include "train_fixture.hpp"

#include <doctest/doctest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

using namespace tfm;
using namespace tfm_train_test;

namespace {
std::string read_file(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}
void write_file(const std::string& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(s.data(), static_cast<std::streamsize>(s.size()));
}
std::string optimizer_bytes(const optim::optimizer<float>& o) {
  std::ostringstream os(std::ios::binary);
  o.save(os);
  return os.str();
}
/// Index size from the header: "TFMCKPT1" | u64 index_bytes (little endian).
std::size_t index_end(const std::string& file) {
  std::uint64_t n = 0;
  for (int i = 0; i < 8; ++i)
    n |= static_cast<std::uint64_t>(
             static_cast<unsigned char>(file[8 + static_cast<std::size_t>(i)]))
         << (8 * i);
  return 16 + static_cast<std::size_t>(n) + 4;
}
}  // namespace

TEST_CASE("a training checkpoint round trip restores everything bit for bit") {
  run_options o;
  o.dropout = 0.1;
  o.grad_accum = 2;
  const auto data = micro_corpus();
  session<float> a(o);
  a.st.meta["run.note"] = "a value, with \"quotes\"\nand a newline";
  a.train_to(o, data, 5);
  const std::string path = temp_path("roundtrip.tfm");
  train::save_training_state(path, a.ps, a.opt, a.st);

  run_options other = o;
  other.seed = 99;  // different initial weights: the load must overwrite all of them
  session<float> b(other);
  REQUIRE_FALSE(same_parameters(a.ps, b.ps));
  b.load(path);
  CHECK(same_parameters(a.ps, b.ps));
  CHECK(optimizer_bytes(a.opt) == optimizer_bytes(b.opt));
  CHECK(b.opt.steps() == 5);
  CHECK(b.st.step == 5);
  CHECK(b.st.batch_index == 10);  // 5 steps x 2 micro-batches
  CHECK(b.st.dropout_offset == a.model.dropout_offset());
  CHECK(b.st.dropout_offset > 0);
  CHECK(b.st.model_seed == a.st.model_seed);
  CHECK(b.st.data_seed == a.st.data_seed);
  CHECK(same_curve(a.st.curve, b.st.curve));
  CHECK(b.st.curve.size() == 5);
  CHECK(std::isnan(b.st.curve[0].val_loss));
  CHECK(std::isfinite(b.st.curve[3].val_loss));  // evaluated at step 4
  CHECK(b.st.meta == a.st.meta);

  // The state alone (no model), as a trainer reads it before building the model.
  auto only = train::read_training_state(path);
  CHECK(only.meta.at("state.dtype") == "f32");
  auto cfg = train::get_config(only.meta);
  auto want = micro_config(0.1);
  CHECK(cfg.n_layer == want.n_layer);
  CHECK(cfg.n_embd == want.n_embd);
  CHECK(cfg.dropout == want.dropout);
  std::remove(path.c_str());
}

TEST_CASE("config metadata round trip covers every field (LLaMA layout)") {
  nn::dynamic_config c = micro_config(0.25, true);
  c.window = 8;
  c.norm_eps = 1e-6;
  c.rope_base = 500000.0;
  std::map<std::string, std::string> m;
  train::put_config(m, c);
  CHECK(m.at("config.norm") == "rms_norm");
  CHECK(m.at("config.mlp") == "swiglu");
  CHECK(m.at("config.position") == "rope");
  auto d = train::get_config(m);
  CHECK(d.vocab == c.vocab);
  CHECK(d.block_size == c.block_size);
  CHECK(d.n_kv_head == 2);
  CHECK(d.window == 8);
  CHECK(d.norm == nn::norm_kind::rms_norm);
  CHECK(d.mlp == nn::mlp_kind::swiglu);
  CHECK(d.position == nn::position_kind::rope);
  CHECK_FALSE(d.bias);
  CHECK_FALSE(d.tie_embeddings);
  CHECK(d.norm_eps == 1e-6);
  CHECK(d.rope_base == 500000.0);
  CHECK(d.dropout == 0.25);
  m["config.norm"] = "batch_norm";
  CHECK_THROWS_AS(train::get_config(m), parse_error);
  m.erase("config.norm");
  CHECK_THROWS_AS(train::get_config(m), parse_error);
}

TEST_CASE("bf16 parameters with f32 master weights round trip") {
  run_options o;
  const auto data = micro_corpus();
  session<bf16> a(o);
  a.train_to(o, data, 3);
  const std::string path = temp_path("bf16.tfm");
  train::save_training_state(path, a.ps, a.opt, a.st);
  run_options other = o;
  other.seed = 5;
  session<bf16> b(other);
  b.load(path);
  CHECK(same_parameters(a.ps, b.ps));
  std::ostringstream x(std::ios::binary), y(std::ios::binary);
  a.opt.save(x);
  b.opt.save(y);
  CHECK(x.str() == y.str());
  // An f32 model refuses a bf16 checkpoint.
  session<float> f(o);
  CHECK_THROWS_AS(train::load_training_state(path, f.ps, f.opt), parse_error);
  std::remove(path.c_str());
}

TEST_CASE("a checkpoint of another model shape is rejected") {
  run_options o;
  session<float> a(o);
  const std::string path = temp_path("shape.tfm");
  train::save_training_state(path, a.ps, a.opt, a.st);
  run_options l = o;
  l.llama = true;  // other parameter names
  session<float> b(l);
  CHECK_THROWS_AS(train::load_training_state(path, b.ps, b.opt), parse_error);
  std::remove(path.c_str());
}

TEST_CASE("corrupted checkpoints are rejected with parse_error and leave the model untouched") {
  run_options o;
  const auto data = micro_corpus();
  session<float> a(o);
  a.train_to(o, data, 2);
  const std::string path = temp_path("corrupt.tfm"), bad = temp_path("corrupt_bad.tfm");
  train::save_training_state(path, a.ps, a.opt, a.st);
  const std::string good = read_file(path);
  const std::size_t head = index_end(good);
  REQUIRE(head < good.size());
  MESSAGE("checkpoint of ", good.size(), " bytes, header + index ", head);

  session<float> b(o);
  b.train_to(o, data, 1);  // differs from a
  std::vector<std::vector<float>> before;
  for (const auto& p : b.ps)
    before.emplace_back(p.data->value.data(), p.data->value.data() + p.data->size());
  std::ostringstream ob(std::ios::binary);
  b.opt.save(ob);

  // Every byte of the header and index, then a sample of payload bytes (fixed stride plus the
  // first and last byte of the payload), with one bit flipped each time.
  std::vector<std::size_t> where;
  for (std::size_t i = 0; i < head; ++i) where.push_back(i);
  const std::uint64_t seed = 20240601;
  MESSAGE("payload positions from seed ", seed);
  for (std::uint64_t k = 0; k < 300; ++k)
    where.push_back(head + static_cast<std::size_t>(random_u32(seed, k) % (good.size() - head)));
  where.push_back(head);
  where.push_back(good.size() - 1);
  std::size_t rejected = 0;
  for (std::size_t pos : where) {
    std::string s = good;
    s[pos] = static_cast<char>(s[pos] ^ (1 << (pos % 8)));
    write_file(bad, s);
    try {
      train::load_training_state(bad, b.ps, b.opt);
      FAIL("a flipped bit at byte ", pos, " was not detected");
    } catch (const parse_error&) {
      ++rejected;
    }
  }
  CHECK(rejected == where.size());

  // Truncations: empty, inside the magic, the header, the index, at the end of the index, inside
  // the payload, one byte short.
  for (std::size_t len :
       {std::size_t{0}, std::size_t{5}, std::size_t{15}, std::size_t{16}, head / 2, head - 1, head,
        head + 1, (head + good.size()) / 2, good.size() - 1}) {
    write_file(bad, good.substr(0, len));
    CHECK_THROWS_AS(train::load_training_state(bad, b.ps, b.opt), parse_error);
    CHECK_THROWS_AS(train::read_training_state(bad), parse_error);
  }
  // Trailing garbage after a valid checkpoint changes nothing the reader uses: still loads.
  // (Records are addressed by offset; the reader needs no end marker.)

  // Nothing was modified by the failed loads.
  for (std::size_t i = 0; i < b.ps.size(); ++i)
    CHECK(std::memcmp(before[i].data(), b.ps[i].data->value.data(),
                      before[i].size() * sizeof(float)) == 0);
  std::ostringstream oa(std::ios::binary);
  b.opt.save(oa);
  CHECK(oa.str() == ob.str());

  // A file that is not a checkpoint at all.
  write_file(bad, "step,loss\n1,2.5\n");
  CHECK_THROWS_AS(train::read_training_state(bad), parse_error);
  std::remove(path.c_str());
  std::remove(bad.c_str());
}
