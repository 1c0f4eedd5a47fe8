// GBNF (infer/grammar.hpp): the language features of llama.cpp's grammars/README.md on
// hand-made expectations, parse errors, exact masks over tiny vocabularies (partial UTF-8
// included), and random walks whose masks are checked against a brute-force reference: the
// prefixes of an enumerated finite language.
#include "typeformer/infer/grammar.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <set>
#include <string>
#include <vector>

using namespace tfm;
using namespace tfm::infer;

namespace {

bool accepts(const std::string& gbnf, const std::string& text) {
  return grammar_accepts(compile_grammar(gbnf), text);
}

std::string parse_error_of(const std::string& gbnf) {
  try {
    compile_grammar(gbnf);
  } catch (const parse_error& e) {
    return e.what();
  }
  return "(no error)";
}

/// Allowed token ids after mask() on zero logits.
std::vector<int> allowed_ids(grammar_constraint& c, int n) {
  std::vector<float> lg(static_cast<std::size_t>(n), 0.0f);
  const index_t kept = c.mask(lg.data(), n);
  std::vector<int> out;
  for (int i = 0; i < n; ++i)
    if (lg[static_cast<std::size_t>(i)] == 0.0f) out.push_back(i);
  CHECK(kept == static_cast<index_t>(out.size()));
  for (int i = 0; i < n; ++i)
    if (lg[static_cast<std::size_t>(i)] != 0.0f) CHECK(std::isinf(lg[static_cast<std::size_t>(i)]));
  return out;
}

}  // namespace

TEST_CASE("gbnf: sequences, alternatives, groups, literals and classes") {
  const std::string g = "root ::= \"ab\" | \"c\" ( \"d\" | [x-z] )\n";
  CHECK(accepts(g, "ab"));
  CHECK(accepts(g, "cd"));
  CHECK(accepts(g, "cy"));
  CHECK_FALSE(accepts(g, "c"));
  CHECK_FALSE(accepts(g, "a"));
  CHECK_FALSE(accepts(g, "abc"));
  CHECK_FALSE(accepts(g, "cw"));
  CHECK_FALSE(accepts(g, ""));
  // Negated classes, escapes in classes and literals, any character.
  const std::string h = R"(root ::= [^a-c\n] "\t\"\\\x41\u00e9\U0001F600" [\]\-\[] .)";
  CHECK(accepts(h, "d\t\"\\A\xC3\xA9\xF0\x9F\x98\x80]\n"));
  CHECK(accepts(h, "\xE4\xB8\xAD\t\"\\A\xC3\xA9\xF0\x9F\x98\x80-x"));
  CHECK_FALSE(accepts(h, "b\t\"\\A\xC3\xA9\xF0\x9F\x98\x80]x"));
  CHECK_FALSE(accepts(h, "\n\t\"\\A\xC3\xA9\xF0\x9F\x98\x80]x"));
  CHECK_FALSE(accepts(h, "d\t\"\\A\xC3\xA9\xF0\x9F\x98\x80]"));
  // UTF-8 in the grammar text itself, a class of code points above ASCII.
  const std::string u = "root ::= [ぁ-ゟ]+ \"é\"\n";
  CHECK(accepts(u, "\xE3\x81\x82\xE3\x82\x93\xC3\xA9"));
  CHECK_FALSE(accepts(u, "\xE3\x82\xA2\xC3\xA9"));  // katakana A is outside the range
  // Empty alternatives, rules referring to later rules, comments, continuation lines.
  const std::string c =
      "# a comment\n"
      "root ::= ( \"x\"\n"
      "  | \"y\" # inside a group a newline continues\n"
      "  ) tail\n"
      "tail ::= | \"!\" |\n"
      "   \"?\"\n";
  CHECK(accepts(c, "x"));
  CHECK(accepts(c, "y!"));
  CHECK(accepts(c, "x?"));
  CHECK_FALSE(accepts(c, "x!!"));
}

TEST_CASE("gbnf: repetition operators") {
  const auto n_a = [](int n) { return std::string(static_cast<std::size_t>(n), 'a'); };
  struct rep_case {
    const char* op;
    int lo, hi;  // hi -1: unbounded
  };
  const rep_case cases[] = {{"*", 0, -1},   {"+", 1, -1},    {"?", 0, 1},
                            {"{3}", 3, 3},  {"{2,}", 2, -1}, {"{2,4}", 2, 4},
                            {"{,2}", 0, 2}, {"{0,0}", 0, 0}, {"{ 1 , 3 }", 1, 3}};
  for (const auto& rc : cases) {
    const std::string g = std::string("root ::= \"a\"") + rc.op + " \"b\"\n";
    for (int n = 0; n <= 7; ++n) {
      const bool want = n >= rc.lo && (rc.hi < 0 || n <= rc.hi);
      INFO(g << " on " << n << " a's");
      CHECK(accepts(g, n_a(n) + "b") == want);
    }
  }
  // Repetition of a group and of a multi-character literal; nested repetition.
  CHECK(accepts("root ::= (\"ab\" | \"c\"){2,3}\n", "abc"));
  CHECK(accepts("root ::= (\"ab\" | \"c\"){2,3}\n", "ccab"));
  CHECK_FALSE(accepts("root ::= (\"ab\" | \"c\"){2,3}\n", "abcabc"));
  CHECK(accepts("root ::= \"xy\"+\n", "xyxy"));
  CHECK_FALSE(accepts("root ::= \"xy\"+\n", "xyx"));
  CHECK(accepts("root ::= [0-9]{2}?\n", ""));
  CHECK(accepts("root ::= [0-9]{2}?\n", "12"));
  CHECK_FALSE(accepts("root ::= [0-9]{2}?\n", "1"));
  // Long chains of optional, nullable items: no deep recursion in the checks or the matcher.
  const std::string chain = "root ::= (\"a\"?){0,3000} \"b\"\n";
  CHECK(accepts(chain, std::string(300, 'a') + "b"));
  CHECK_FALSE(accepts(chain, std::string(300, 'a')));
  CHECK(accepts("root ::= [0-9]{0,100000} \"b\"\n", std::string(5000, '7') + "b"));
  // Right recursion (nested brackets).
  const std::string b = "root ::= \"(\" root \")\" | \"x\"\n";
  CHECK(accepts(b, "((x))"));
  CHECK_FALSE(accepts(b, "((x)"));
}

TEST_CASE("gbnf: parse errors name the place and what was expected") {
  struct err_case {
    std::string gbnf, needle;
  };
  const err_case cases[] = {
      {"root = \"x\"\n", "line 1, column 6: expected '::=' after the rule name 'root'"},
      {"root ::= \"x\n", "line 1, column 12: unterminated string literal"},
      {"root ::= [a-\n", "line 1, column 10: unterminated character class"},
      {"root ::= ( \"x\"\n", "expected ')' to close the group opened at line 1, column 10"},
      {"root ::= \"x\" )\n", "line 1, column 14: expected a symbol, '|' or the end of the line"},
      {"root ::= * \"x\"\n", "line 1, column 10: expected an item before the repetition"},
      {"root ::= \"x\"{3,1}\n", "repetition {m,n} has n < m"},
      {"root ::= \"x\"{2\n", "expected '}' to close the repetition"},
      {"root ::= \"\\q\"\n", "line 1, column 11: unknown escape '\\q'"},
      {"root ::= \"\\x4\"\n", "expected 2 hexadecimal digits"},
      {"root ::= [z-a]\n", "character range end is below its start"},
      {"root ::= other\n", "line 1, column 10: rule 'other' is used but not defined"},
      {"start ::= \"x\"\n", "the grammar has no 'root' rule"},
      {"root ::= \"x\"\nroot ::= \"y\"\n", "line 2, column 1: rule 'root' is defined twice"},
      {"root ::= expr\nexpr ::= expr \"+\" term | term\nterm ::= [0-9]\n",
       "line 2, column 1: left recursion is not supported: expr -> expr"},
      {"root ::= a\na ::= b? a \"x\" | \"y\"\nb ::= \"z\"\n", "left recursion is not supported"},
      {"root ::= a\na ::= b \"x\"\nb ::= c\nc ::= a | \"\"\n",
       "left recursion is not supported: a -> b -> c -> a"},
      {"root ::= (\"a\"?)* \"b\"\n", "an item that can match empty text"},
      {"root ::= " +
           [] {
             std::string r;
             for (int i = 0; i < 3; ++i) r += "\"a\"{0,100000} ";
             return r;
           }() +
           "\n",
       "the grammar needs more than 262144 rules"},
      {"root ::= " + std::string(300, '(') + "\"x\"" + std::string(300, ')') + "\n",
       "groups are nested more than 256 deep"},
      {"root ::= (\"a\"?){0,1000} \"b\"\n(\"c\"?)*\n", "expected a rule name"},
      {"root ::= loop\nloop ::= \"x\" loop\n", "rules that can never finish: 'root', 'loop'"},
      {"root ::= <[12]>\n", "token references (<[id]>, <text>, !<...>) are not supported"},
      {"root ::= \"\xC3\"\n", "the grammar text is not valid UTF-8"},
      {"root ::= \"x\"{100001}\n", "above the limit of 100000"},
      {"root ::= \"x\" \"y\" |\n\n   z\n", "rule 'z' is used but not defined"},
  };
  for (const auto& ec : cases) {
    const std::string msg = parse_error_of(ec.gbnf);
    INFO("grammar: " << ec.gbnf << "message: " << msg);
    CHECK(msg.find(ec.needle) != std::string::npos);
    CHECK(msg.find("tfm::infer::compile_grammar") != std::string::npos);
  }
}

TEST_CASE("gbnf masks: exact allowed sets over a tiny vocabulary") {
  // ids:                               0    1    2    3     4     5    6     7    8   9
  const std::vector<std::string> v = {"a", "b", "c", "ab", "ac", "1", "12", "x", "", "abc"};
  auto voc = std::make_shared<const grammar_vocabulary>(v);
  auto g = compile_grammar("root ::= \"ab\" | \"ac\" [0-9]*\n");
  grammar_constraint c(g, voc, {8});
  CHECK(allowed_ids(c, 10) == std::vector<int>{0, 3, 4});
  CHECK_FALSE(c.complete());
  c.accept(0);  // "a"
  CHECK(allowed_ids(c, 10) == std::vector<int>{1, 2});
  c.accept(2);  // "ac"
  CHECK(c.complete());
  CHECK(allowed_ids(c, 10) == std::vector<int>{5, 6, 8});  // digits or EOS
  c.accept(6);                                             // "ac12"
  CHECK(allowed_ids(c, 10) == std::vector<int>{5, 6, 8});
  CHECK_THROWS_AS(c.accept(0), value_error);
  c.accept(8);  // EOS
  CHECK(c.done());
  CHECK(allowed_ids(c, 10).empty());
  CHECK_THROWS_AS(c.accept(5), value_error);
  // A finished "ab": nothing may follow, only EOS; logits beyond the vocabulary are masked.
  c.reset();
  c.accept(3);
  CHECK(c.done());  // complete, and nothing may follow
  CHECK(c.complete());
  CHECK(allowed_ids(c, 12) == std::vector<int>{8});
  // EOS before the end is refused.
  c.reset();
  c.accept(0);
  CHECK_THROWS_AS(c.accept(8), value_error);
  // Without EOS ids, done() tells the caller to stop.
  grammar_constraint d(g, voc, {});
  d.accept(3);
  CHECK(d.done());
  CHECK(allowed_ids(d, 10).empty());
}

TEST_CASE("gbnf masks: tokens that split a UTF-8 character") {
  // é = C3 A9, ë = C3 AB, ê = C3 AA.
  const std::vector<std::string> v = {"\xC3",
                                      "\xA9",
                                      "\xAB",
                                      "\xC3\xA9",
                                      "a",
                                      "\xAB"
                                      "a",
                                      "\xC3\xAA",
                                      "\xC0\xAF",
                                      "\xED\xA0",
                                      "\xE4",
                                      "\xE4\xB8",
                                      "\xB8\xAD"};
  auto voc = std::make_shared<const grammar_vocabulary>(v);
  {
    grammar_constraint c(compile_grammar("root ::= \"\xC3\xA9\" | \"\xC3\xAB\" \"a\"\n"), voc, {});
    CHECK(allowed_ids(c, 12) == std::vector<int>{0, 3});
    c.accept(0);  // half of é or ë
    CHECK_FALSE(c.complete());
    CHECK(allowed_ids(c, 12) == std::vector<int>{1, 2, 5});
    c.accept(2);  // ë
    CHECK(allowed_ids(c, 12) == std::vector<int>{4});
    c.accept(4);
    CHECK(c.complete());
  }
  {
    // Any character but é: the lead byte C3 stays allowed (ê, ë ... follow it), é does not;
    // overlong C0 AF and the surrogate prefix ED A0 are never well-formed.
    grammar_constraint c(compile_grammar("root ::= [^\xC3\xA9]\n"), voc, {});
    CHECK(allowed_ids(c, 12) == std::vector<int>{0, 4, 6, 9, 10});
    c.accept(0);
    CHECK(allowed_ids(c, 12) == std::vector<int>{2});  // ë; é is excluded, "ëa" is too long
  }
  {
    // 中 = E4 B8 AD split across two tokens in two ways.
    auto g = compile_grammar("root ::= \"\xE4\xB8\xAD\" \"a\"\n");
    grammar_constraint c(g, voc, {});
    CHECK(allowed_ids(c, 12) == std::vector<int>{9, 10});
    c.accept(9);
    CHECK(allowed_ids(c, 12) == std::vector<int>{11});
    c.accept(11);
    CHECK(allowed_ids(c, 12) == std::vector<int>{4});
    c.reset();
    c.accept(10);
    CHECK(allowed_ids(c, 12).empty());  // no token is the single byte AD
    CHECK_THROWS_AS(c.accept(11), value_error);
  }
}

TEST_CASE("gbnf masks: random walks agree with the prefixes of the enumerated language") {
  // root ::= item ( "," item ){0,2} over a finite item set: the language is enumerated here and
  // a token is allowed iff (text so far + token) is a prefix of some sentence.
  const std::vector<std::string> items = {"a",  "ab", "\xC3\xA9", "x",  "xy", "0",  "1",  "2", "00",
                                          "01", "02", "10",       "11", "12", "20", "21", "22"};
  auto g = compile_grammar(
      "root ::= item ( \",\" item ){0,2}\n"
      "item ::= \"a\" | \"ab\" | \"\xC3\xA9\" | \"x\" \"y\"? | [0-2]{1,2}\n");
  std::set<std::string> lang;
  for (const auto& a : items) {
    lang.insert(a);
    for (const auto& b : items) {
      lang.insert(a + "," + b);
      for (const auto& c : items) lang.insert(a + "," + b + "," + c);
    }
  }
  std::vector<std::string> v = {"a",   "b",   ",",    "x",    "y",        "0",     "1",
                                "2",   "3",   "ab",   "a,",   ",a",       ",x",    "xy,",
                                "12",  "22,", "\xC3", "\xA9", "\xC3\xA9", "\xA9,", "a,b",
                                "0,1", ",,",  "",     "ba",   "\xA9\xC3", "x,y",   "b,\xC3"};
  const int eos = 23;  // the empty token
  const int n = static_cast<int>(v.size());
  auto voc = std::make_shared<const grammar_vocabulary>(v);
  const auto is_prefix = [&](const std::string& p) {
    auto it = lang.lower_bound(p);
    return it != lang.end() && it->compare(0, p.size(), p) == 0;
  };
  for (std::uint32_t seed = 1; seed <= 40; ++seed) {
    if (seed == 1) MESSAGE("random walks, seeds 1..40");
    std::mt19937 rng(seed);
    grammar_constraint c(g, voc, {eos});
    if (seed % 2 == 0) c.max_states = 3;  // rebuild the automaton at almost every step
    std::string text;
    for (int step = 0; step < 20; ++step) {
      std::vector<int> want;
      for (int t = 0; t < n; ++t) {
        if (t == eos) {
          if (lang.count(text)) want.push_back(t);
        } else if (!v[static_cast<std::size_t>(t)].empty() &&
                   is_prefix(text + v[static_cast<std::size_t>(t)])) {
          want.push_back(t);
        }
      }
      INFO("seed " << seed << ", text '" << text << "'");
      REQUIRE(allowed_ids(c, n) == want);
      CHECK(c.complete() == (lang.count(text) == 1));
      if (want.empty()) break;
      const int t = want[std::uniform_int_distribution<std::size_t>(0, want.size() - 1)(rng)];
      c.accept(t);
      if (t == eos) break;
      text += v[static_cast<std::size_t>(t)];
    }
  }
}
