// Seeded byte mutations of the published chat templates: each mutant must render or be refused
// with a tfm::error; never crash, hang or throw anything else. TFM_TEST_SEED sets the seed.
#include "jinja_fuzz_body.hpp"
#include "jinja_test_support.hpp"

#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>

using namespace jinja_test;

namespace {

std::string mutate(std::string s, std::mt19937_64& rng) {
  static const char* pieces[] = {"{{",
                                 "}}",
                                 "{%",
                                 "%}",
                                 "{#",
                                 "#}",
                                 "-",
                                 "+",
                                 "(",
                                 ")",
                                 "[",
                                 "]",
                                 "'",
                                 "\"",
                                 "\\",
                                 "|",
                                 ".",
                                 " is ",
                                 " not ",
                                 " in ",
                                 "loop",
                                 "messages",
                                 "\n",
                                 "{% for x in messages %}",
                                 "{% endfor %}",
                                 "{% if %}",
                                 "namespace(",
                                 "raise_exception(",
                                 "**",
                                 "~",
                                 "\xc3\xa9",
                                 "\xff",
                                 "range(99999)",
                                 "* 99999"};
  const int n = 1 + static_cast<int>(rng() % 4);
  for (int k = 0; k < n && !s.empty(); ++k) {
    const std::size_t at = rng() % (s.size() + 1);
    switch (rng() % 5) {
      case 0:  // flip a byte
        if (at < s.size()) s[at] = static_cast<char>(rng() & 0xFF);
        break;
      case 1:  // delete a run
        s.erase(at, rng() % 16);
        break;
      case 2:  // insert a piece of syntax
        s.insert(at, pieces[rng() % (sizeof(pieces) / sizeof(pieces[0]))]);
        break;
      case 3: {  // duplicate a run
        const std::size_t len = rng() % 64;
        s.insert(at, s.substr(at, len));
        break;
      }
      default:  // swap two bytes
        if (at < s.size()) std::swap(s[at], s[rng() % s.size()]);
    }
  }
  return s;
}

}  // namespace

TEST_CASE("jinja: seeded mutations of real templates render or raise tfm errors") {
  const char* env = std::getenv("TFM_TEST_SEED");
  const std::uint64_t seed = env ? std::strtoull(env, nullptr, 10) : 20240905u;
  std::printf("jinja fuzz seed %llu (set TFM_TEST_SEED to change)\n",
              static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(seed);
  int ok = 0, refused = 0;
  for (const std::string& name : template_names()) {
    const std::string base = template_text(name);
    REQUIRE(!base.empty());
    (jinja_fuzz::run_one(base) ? ok : refused)++;  // gemma refuses the system turn
    for (int i = 0; i < 300; ++i) {
      const std::string m = mutate(base, rng);
      (jinja_fuzz::run_one(m) ? ok : refused)++;
    }
  }
  std::printf("jinja fuzz: %d mutants rendered, %d refused with tfm errors\n", ok, refused);
  CHECK(ok + refused == 301 * static_cast<int>(template_names().size()));
}
