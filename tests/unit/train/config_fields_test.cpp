// The config field list (TFM_NN_CONFIG_FIELDS in nn/config.hpp) and what is generated from it:
// every field round-trips a non-default value through its command-line flag (set_config_flag),
// put_config and get_config; the checkpoint keys and text forms are those of the hand-written
// put_config they replaced (so older checkpoints load); per-field rules come out of validate;
// a resumed run refuses a changed model field whatever its flag.
#include <typeformer/nn/config.hpp>
#include <typeformer/train/run_settings.hpp>
#include <typeformer/train/trainer.hpp>

#include <doctest/doctest.h>

#include <map>
#include <string>
#include <string_view>

using namespace tfm;

namespace {
// Another valid text for a field of form `form` whose current text is `cur`.
std::string other_text(std::string_view form, const std::string& cur) {
  if (form == "N") return std::to_string(std::stoll(cur) + 3);
  if (form == "X") return train::exact_string(std::stod(cur) * 2 + 0.125);
  if (form == "0|1") return cur == "1" ? "0" : "1";
  std::string f(form);  // enum words: the first one that differs
  std::size_t pos = 0;
  while (pos <= f.size()) {
    auto bar = f.find('|', pos);
    if (bar == std::string::npos) bar = f.size();
    std::string w = f.substr(pos, bar - pos);
    if (w != cur) return w;
    pos = bar + 1;
  }
  return cur;
}
}  // namespace

TEST_CASE("every config field round-trips through its flag, put_config and get_config") {
  const auto fields = train::config_fields();
  REQUIRE(fields.size() >= 16);
  int flagged = 0;
  for (const auto& f : fields) {
    CAPTURE(f.name);
    nn::dynamic_config c;
    const std::string before = train::config_field_text(c, f.name);
    const std::string after = other_text(f.form, before);
    REQUIRE(after != before);
    if (*f.flag != '\0') {
      ++flagged;
      CHECK(std::string_view(f.flag).substr(0, 2) == "--");
      CHECK(train::set_config_flag(c, f.flag, after));
    } else {
      // no flag (the vocabulary comes from the tokenizer): set it through the checkpoint text
      std::map<std::string, std::string> m;
      train::put_config(m, c);
      m[std::string("config.") + f.name] = after;
      c = train::get_config(m);
    }
    CHECK(train::config_field_text(c, f.name) == after);
    std::map<std::string, std::string> m;
    train::put_config(m, c);
    CHECK(m.size() == fields.size());
    REQUIRE(m.count(std::string("config.") + f.name));
    CHECK(m.at(std::string("config.") + f.name) == after);
    const nn::dynamic_config back = train::get_config(m);
    for (const auto& g : fields)  // the changed field and every other one
      CHECK(train::config_field_text(back, g.name) == train::config_field_text(c, g.name));
    // a missing entry: an error for the fields every checkpoint holds, the default for fields
    // added to the list later (checkpoints written before them)
    m.erase(std::string("config.") + f.name);
    bool v1 = false;
    for (auto n : train::config_fields_v1) v1 = v1 || n == f.name;
    if (v1)
      CHECK_THROWS_AS(train::get_config(m), parse_error);
    else
      CHECK(train::config_field_text(train::get_config(m), f.name) ==
            train::config_field_text(nn::dynamic_config{}, f.name));
  }
  CHECK(flagged == static_cast<int>(fields.size()) - 1);  // all but vocab
  nn::dynamic_config d;
  CHECK_FALSE(train::set_config_flag(d, "--no-such-field", "1"));
  CHECK_FALSE(train::set_config_flag(d, "", "1"));
}

TEST_CASE("put_config writes the keys and text forms of checkpoints written before the list") {
  nn::dynamic_config c = nn::to_dynamic(nn::llama_tiny{});
  c.window = 8;
  c.norm_eps = 1e-6;
  c.rope_base = 500000.0;
  c.dropout = 0.25;
  std::map<std::string, std::string> m;
  train::put_config(m, c);
  const std::map<std::string, std::string> want = {
      {"config.vocab", "256"},        {"config.block_size", "128"}, {"config.n_layer", "4"},
      {"config.n_embd", "128"},       {"config.n_head", "4"},       {"config.n_kv_head", "2"},
      {"config.ffn", "352"},          {"config.window", "8"},       {"config.norm", "rms_norm"},
      {"config.mlp", "swiglu"},       {"config.position", "rope"},  {"config.bias", "0"},
      {"config.tie_embeddings", "0"}, {"config.norm_eps", "1e-06"}, {"config.rope_base", "5e+05"},
      {"config.dropout", "0.25"},
  };
  for (const auto& kv : want) {  // not a structured binding: CAPTURE's lambda cannot use one
    const std::string& k = kv.first;
    CAPTURE(k);
    REQUIRE(m.count(k));
    CHECK(m.at(k) == kv.second);
  }
  // (fields added to the list since write more keys; these never change)
  // the old parser's aliases still read
  auto m2 = want;
  m2["config.norm"] = "rmsnorm";
  CHECK(train::get_config(m2).norm == nn::norm_kind::rms_norm);
  m2["config.bias"] = "true";
  CHECK_THROWS_AS(train::get_config(m2), parse_error);
}

TEST_CASE("flags reject malformed values with a message naming the flag") {
  nn::dynamic_config c;
  auto msg = [&](const char* flag, const char* text) -> std::string {
    try {
      train::set_config_flag(c, flag, text);
    } catch (const value_error& e) {
      return e.what();
    }
    return "";
  };
  CHECK(msg("--n-layer", "two") == "--n-layer needs an integer, not 'two'.");
  CHECK(msg("--n-layer", "") == "--n-layer needs an integer, not ''.");
  CHECK(msg("--dropout", "nan") == "--dropout needs a number, not 'nan'.");
  CHECK(msg("--bias", "yes") == "--bias needs 0 or 1, not 'yes'.");
  CHECK(msg("--position", "sinusoid") ==
        "--position needs learned, rope or alibi, not 'sinusoid'.");
  CHECK(c.n_layer == nn::dynamic_config{}.n_layer);  // nothing was changed
}

TEST_CASE("validate: per-field rules from the list, cross-field rules by hand") {
  auto msg = [](nn::dynamic_config c) -> std::string {
    try {
      nn::validate(c);
    } catch (const value_error& e) {
      return e.what();
    }
    return "";
  };
  nn::dynamic_config c;
  CHECK(msg(c) == "");
  c.dropout = 1.0;
  CHECK(msg(c) == "tfm::nn config: dropout must be in [0, 1).");
  c = {};
  c.window = -1;
  CHECK(msg(c) == "tfm::nn config: window must be >= 0.");
  c = {};
  c.block_size = 0;
  CHECK(msg(c) == "tfm::nn config: block_size must be positive.");
  c = {};
  c.n_head = 3;
  CHECK(msg(c) == "tfm::nn config: n_head must be positive and divide n_embd (128).");
  static_assert(nn::field_rule_violation(nn::field_rule::positive, 0) != nullptr);
  static_assert(nn::field_rule_violation(nn::field_rule::fraction, 0.5) == nullptr);
}

TEST_CASE("a resumed run refuses a changed model field, for every flagged field") {
  train::run_settings saved;
  saved.data = {"a.txt"};
  std::map<std::string, std::string> meta;
  train::put_run_meta(meta, saved);
  for (const auto& f : train::config_fields()) {
    if (*f.flag == '\0') continue;
    CAPTURE(f.name);
    train::run_settings s;
    s.data = saved.data;
    const std::string flag = std::string(f.flag).substr(2);
    s.given.insert(flag);
    // the same value: accepted
    auto same = s;
    train::apply_run_meta(same, meta);
    // another value: refused
    train::set_config_flag(s.model, f.flag,
                           other_text(f.form, train::config_field_text(s.model, f.name)));
    CHECK_THROWS_AS(train::apply_run_meta(s, meta), train::settings_error);
  }
}
