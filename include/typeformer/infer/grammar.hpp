// typeformer/infer/grammar.hpp
//
// WHAT THIS REPRESENTS
//   Constrained decoding: a context-free grammar written in GBNF (the grammar language of
//   llama.cpp, grammars/README.md there) compiled into a `grammar`, and a `grammar_constraint`
//   that, before each decode step, sets -inf on every token whose bytes cannot continue a
//   document of the grammar, and allows the end-of-sequence tokens only when the document is
//   complete. json_grammar() is the built-in grammar behind the OpenAI API's
//   `response_format: {"type": "json_object"}`; infer/json_schema.hpp turns a JSON schema into a
//   grammar.
//
// GBNF (as llama.cpp reads it)
//   name ::= alternatives        a rule; names are [a-zA-Z0-9-]+; `root` is the start rule
//   a b                          sequence;  a | b  alternatives;  ( ... )  grouping
//   "text"                       literal, escapes \n \r \t \\ \" \[ \] \- \xHH \uHHHH \UHHHHHHHH
//   [a-z0-9_] [^"\\]             character class / negated class, same escapes, ranges a-z
//   .                            any code point
//   x* x+ x? x{m} x{m,} x{m,n} x{,n}   repetition of the item before (counts up to 100000;
//                                      at most 2^18 rules in all; groups nested 256 deep)
//   # comment                    to the end of the line
//   A rule ends at a newline, except inside parentheses and right after `|`.
//   Refused with a parse_error naming line and column (byte-based, 1-based) and what was
//   expected: syntax errors, a rule defined twice, an undefined rule, no `root`, left recursion
//   (a rule that can reach itself before consuming a character, e.g. `a ::= a "x" | "y"`), and a
//   reachable rule that can never finish (every derivation refers to itself forever), since the
//   constraint relies on "a live prefix can always be completed".
//   Not supported (refused): llama.cpp's token references `<[id]>`, `<text>`, `!<...>`.
//   As in llama.cpp, `a ::=` at the end of a line continues on the next line: write an empty
//   rule as `a ::= ""`.
//
// MATCHING
//   Terminals are Unicode code points; documents are matched as UTF-8 bytes. A token may end in
//   the middle of a code point: its bytes are accepted when some code point starting with them
//   can still continue the document (the partial code point is carried into the next token).
//   Only well-formed UTF-8 is accepted (no overlong forms, surrogates or bytes above U+10FFFF).
//   Semantics follow llama.cpp's src/llama-grammar.cpp (a set of pushdown stacks advanced one
//   code point at a time); this implementation is independent: stacks are hash-consed linked
//   frames, sets of stacks are the states of a lazily built byte automaton (each transition
//   is computed once and cached), and mask() walks a trie of the vocabulary's token bytes in
//   preorder, skipping a subtree at the first byte that leads nowhere.
//   The guarantee is on text: an allowed token leaves a prefix of some document. Whether the
//   vocabulary can spell the rest is not checked (a byte-level BPE vocabulary spells any text).
//   Cost: a state holds one stack per way the text so far can be parsed, so a grammar like
//   ("a"?){0,1000} (many copies of an item that may be empty) makes large states; llama.cpp's
//   grammars/README.md gives the same advice.
//
// THREADS
//   grammar and grammar_vocabulary are immutable and may be shared (shared_ptr) by many
//   constraints on many threads. A grammar_constraint (and grammar_matcher) belongs to one
//   sequence; it is copyable (e.g. for beam search), not thread-safe.
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/core/index.hpp"
#include "typeformer/tokenizer/utf8.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace infer {

namespace detail {
class grammar_builder;
}  // namespace detail

/// A compiled grammar (immutable). Rules are flattened into one element array: each
/// alternative is a run of `chars` / `ref` elements closed by an `end` element.
class grammar {
 public:
  enum class kind : std::uint8_t { chars, ref, end };
  struct element {
    kind k = kind::end;
    std::int32_t arg = 0;  ///< chars: class index; ref: rule index
  };
  using range = std::pair<char32_t, char32_t>;  ///< inclusive code point range

  const std::vector<element>& elements() const noexcept { return elems_; }
  /// Start index (into elements()) of each alternative of rule r.
  const std::vector<std::int32_t>& alternatives(std::int32_t r) const {
    return alts_[static_cast<std::size_t>(r)];
  }
  /// Sorted, disjoint ranges of character class c.
  const std::vector<range>& char_class(std::int32_t c) const {
    return classes_[static_cast<std::size_t>(c)];
  }
  bool class_contains(std::int32_t c, char32_t cp) const noexcept {
    const auto& v = classes_[static_cast<std::size_t>(c)];
    auto it = std::upper_bound(v.begin(), v.end(), cp,
                               [](char32_t x, const range& r) { return x < r.first; });
    return it != v.begin() && cp <= std::prev(it)->second;
  }
  /// True when class c holds a code point in [lo, hi].
  bool class_intersects(std::int32_t c, char32_t lo, char32_t hi) const noexcept {
    const auto& v = classes_[static_cast<std::size_t>(c)];
    auto it = std::upper_bound(v.begin(), v.end(), hi,
                               [](char32_t x, const range& r) { return x < r.first; });
    return it != v.begin() && std::prev(it)->second >= lo;
  }
  std::size_t rule_count() const noexcept { return names_.size(); }
  const std::string& rule_name(std::int32_t r) const { return names_[static_cast<std::size_t>(r)]; }
  std::int32_t root() const noexcept { return root_; }
  /// The GBNF text it was compiled from.
  const std::string& source() const noexcept { return source_; }

 private:
  friend class detail::grammar_builder;
  std::vector<element> elems_;
  std::vector<std::vector<std::int32_t>> alts_;
  std::vector<std::string> names_;
  std::vector<std::vector<range>> classes_;
  std::int32_t root_ = 0;
  std::string source_;
};

/// Compiles GBNF text (see the file comment); parse_error on any problem. `doc` names the
/// grammar in messages.
std::shared_ptr<const grammar> compile_grammar(std::string_view gbnf,
                                               std::string_view doc = "grammar");

/// Options of the built-in JSON grammar (RFC 8259).
struct json_grammar_options {
  bool object_root = true;  ///< root must be an object (response_format json_object)
  /// Most whitespace characters between two tokens of the document; -1: unbounded (exactly
  /// RFC 8259). A bound keeps a model from emitting whitespace forever.
  int max_whitespace = 20;
};

/// The GBNF text of the JSON grammar.
std::string json_gbnf(json_grammar_options o = {});
/// The rules value, object, member, array, string, char, number and ws of json_gbnf (no root),
/// for grammars built on JSON (infer/json_schema.hpp).
std::string json_value_rules(int max_whitespace);
/// The compiled JSON grammar (compile_grammar(json_gbnf(o))).
inline std::shared_ptr<const grammar> json_grammar(json_grammar_options o = {}) {
  return compile_grammar(json_gbnf(o), "json grammar");
}

/// A lazily built byte automaton over a grammar's stacks. State ids are small integers;
/// `dead` means no document has this prefix. Not thread-safe.
class grammar_matcher {
 public:
  using state_id = std::int32_t;
  static constexpr state_id dead = -1;

  explicit grammar_matcher(std::shared_ptr<const grammar> g);

  const grammar& rules() const noexcept { return *g_; }
  state_id start() const noexcept { return start_; }
  /// State after byte b (cached), or dead.
  state_id next(state_id s, unsigned char b) {
    const std::int32_t t = table_of(s);
    std::int32_t& slot = tables_[static_cast<std::size_t>(t) * 256 + b];
    if (slot == unknown_) slot = compute(s, b);
    return slot;
  }
  /// State after the bytes, or dead.
  state_id feed(state_id s, std::string_view bytes) {
    for (char c : bytes) {
      if (s == dead) return dead;
      s = next(s, static_cast<unsigned char>(c));
    }
    return s;
  }
  /// True when the bytes so far form a complete document (no partial code point pending).
  bool complete(state_id s) const noexcept {
    if (s == dead) return false;
    const state& st = states_[static_cast<std::size_t>(s)];
    return st.need == 0 && !st.frames.empty() && st.frames.front() == -1;
  }
  /// True when some character may still follow.
  bool can_continue(state_id s) const noexcept {
    if (s == dead) return false;
    const state& st = states_[static_cast<std::size_t>(s)];
    return !st.frames.empty() && st.frames.back() >= 0;
  }
  std::size_t state_count() const noexcept { return states_.size(); }
  std::size_t frame_count() const noexcept { return frames_.size(); }
  /// Drops every cached state and transition except `keep`, whose new id is returned (used to
  /// bound memory over long generations).
  state_id rebase(state_id keep);

 private:
  struct frame {
    std::int32_t pos;     // element index to match next
    std::int32_t parent;  // frame to continue with after this rule ends; -1: the bottom
  };
  struct state {
    std::vector<std::int32_t> frames;  // sorted; -1 first when the document may end here
    unsigned char partial[3] = {0, 0, 0};
    std::uint8_t npartial = 0;
    std::uint8_t need = 0;  // continuation bytes still expected
    std::int32_t table = -1;
  };
  static constexpr std::int32_t unknown_ = -2;

  std::int32_t intern_frame(std::int32_t pos, std::int32_t parent);
  state_id intern_state(state&& st);
  std::int32_t table_of(state_id s);
  void expand(std::int32_t f, std::vector<std::int32_t>& out);
  state_id advance(const std::vector<std::int32_t>& frames, char32_t cp);
  bool partial_feasible(const state& st) const;
  state_id compute(state_id s, unsigned char b);
  void clear();

  std::shared_ptr<const grammar> g_;
  std::vector<frame> frames_;
  std::unordered_map<std::uint64_t, std::int32_t> frame_ids_;
  std::vector<state> states_;
  std::unordered_map<std::string, state_id> state_ids_;
  std::vector<std::int32_t> tables_;
  std::vector<std::uint32_t> visited_;
  std::vector<std::int32_t> work_;
  std::uint32_t epoch_ = 0;
  bool complete_hit_ = false;
  state_id start_ = dead;
};

/// True when the whole text is a document of the grammar.
inline bool grammar_accepts(std::shared_ptr<const grammar> g, std::string_view text) {
  grammar_matcher m(std::move(g));
  return m.complete(m.feed(m.start(), text));
}

/// The byte strings of a vocabulary's tokens, arranged as a trie for mask(). Immutable; build
/// once per tokenizer and share. A token with no bytes (control tokens) is never allowed by a
/// grammar; end-of-sequence tokens are handled by id.
class grammar_vocabulary {
 public:
  /// token_bytes[id] is the decoded byte string of token id.
  explicit grammar_vocabulary(std::vector<std::string> token_bytes);

  std::size_t size() const noexcept { return bytes_.size(); }
  const std::string& bytes(std::int32_t id) const {
    if (id < 0 || static_cast<std::size_t>(id) >= bytes_.size())
      fail(errc::index, "tfm::infer::grammar_vocabulary: token id ", id,
           " is outside the vocabulary (", bytes_.size(), " tokens).");
    return bytes_[static_cast<std::size_t>(id)];
  }

  struct node {
    std::int32_t depth;      // bytes from the root (root: 0)
    std::int32_t end;        // one past the last node of this subtree (preorder)
    std::int32_t tok_begin;  // token ids ending here: ids()[tok_begin, tok_end)
    std::int32_t tok_end;
    unsigned char byte;  // the byte leading here from the parent
  };
  const std::vector<node>& nodes() const noexcept { return nodes_; }
  const std::vector<std::int32_t>& ids() const noexcept { return ids_; }
  std::int32_t max_depth() const noexcept { return max_depth_; }

 private:
  std::vector<std::string> bytes_;
  std::vector<node> nodes_;
  std::vector<std::int32_t> ids_;
  std::int32_t max_depth_ = 0;
};

/// The bytes of every token of a tokenizer with vocab_size() and token_to_piece(id, special)
/// (tokenizer/vocab_tokenizer.hpp): control tokens give no bytes and are never allowed.
template <class Tokenizer>
std::shared_ptr<const grammar_vocabulary> make_grammar_vocabulary(const Tokenizer& tok) {
  std::vector<std::string> b(tok.vocab_size());
  for (std::size_t i = 0; i < b.size(); ++i)
    b[i] = tok.token_to_piece(static_cast<std::int32_t>(i), false);
  return std::make_shared<const grammar_vocabulary>(std::move(b));
}

/// The constraint of one sequence: mask() before sampling, accept() after.
class grammar_constraint {
 public:
  /// eos_ids: the end-of-sequence / end-of-generation tokens; allowed only when complete().
  grammar_constraint(std::shared_ptr<const grammar> g,
                     std::shared_ptr<const grammar_vocabulary> vocab,
                     std::vector<std::int32_t> eos_ids);

  /// Sets -inf on every logit whose token cannot continue the document (ids at or beyond the
  /// vocabulary size included); returns the number of tokens left allowed. After an EOS was
  /// accepted every token is forbidden.
  index_t mask(float* logits, index_t n);
  /// The allowed tokens as a bitmap (bit id of word id/64), for callers that mask themselves.
  const std::vector<std::uint64_t>& allowed();
  /// Advances by one token; value_error when mask() would have forbidden it.
  void accept(std::int32_t token);
  /// Advances by raw bytes (e.g. text already placed in the prompt); value_error when they
  /// cannot continue the document.
  void accept_bytes(std::string_view bytes);
  /// True when the text so far is a complete document (EOS would be allowed).
  bool complete() const noexcept { return !finished_ && m_.complete(cur_); }
  /// True once an EOS token was accepted, or when the document is complete and nothing may
  /// follow it (the caller should stop).
  bool done() const noexcept { return finished_ || (complete() && !m_.can_continue(cur_)); }
  /// Back to the empty document.
  void reset();
  const grammar_vocabulary& vocabulary() const noexcept { return *vocab_; }
  grammar_matcher& matcher() noexcept { return m_; }
  /// Keep the masks of the last few states (a state repeats often, e.g. inside a string).
  bool cache_masks = true;
  /// Caps that trigger grammar_matcher::rebase() between steps.
  /// (The JSON grammar on SmolLM2's vocabulary holds about 600 states; each costs 1 KiB.)
  std::size_t max_states = 4096;
  std::size_t max_frames = std::size_t{1} << 18;

 private:
  bool is_eos(std::int32_t t) const noexcept {
    return std::find(eos_.begin(), eos_.end(), t) != eos_.end();
  }
  void compute_allowed(std::vector<std::uint64_t>& bits);
  void maybe_rebase();

  grammar_matcher m_;
  std::shared_ptr<const grammar_vocabulary> vocab_;
  std::vector<std::int32_t> eos_;
  grammar_matcher::state_id cur_;
  bool finished_ = false;
  std::vector<grammar_matcher::state_id> walk_;
  struct cached_mask {
    grammar_matcher::state_id s;
    std::uint64_t used;
    std::vector<std::uint64_t> bits;
  };
  std::vector<cached_mask> cache_;  // small LRU of masks by state
  std::uint64_t clock_ = 0;
  static constexpr std::size_t cache_slots_ = 8;
};

// ---- implementation ---------------------------------------------------------------------------

namespace detail {

/// Builds a grammar from GBNF text (the parser).
class grammar_builder {
 public:
  grammar_builder(std::string_view src, std::string_view doc) : src_(src), doc_(doc) {}

  std::shared_ptr<const grammar> build() {
    skip_space(true);
    while (pos_ < src_.size()) parse_rule();
    return finish();
  }

 private:
  struct sym {
    grammar::kind k;
    std::int32_t arg;
  };
  using seq = std::vector<sym>;
  static constexpr std::int64_t max_repeat = 100000;
  static constexpr std::size_t max_rules = std::size_t{1} << 18;
  static constexpr int max_nesting = 256;

  // -- errors
  [[noreturn]] void error_at(std::size_t at, const std::string& what) const {
    std::size_t line = 1, col = 1;
    for (std::size_t i = 0; i < at && i < src_.size(); ++i) {
      if (src_[i] == '\n') {
        ++line;
        col = 1;
      } else {
        ++col;
      }
    }
    fail(errc::parse, "tfm::infer::compile_grammar: ", doc_, ", line ", line, ", column ", col,
         ": ", what);
  }
  static std::string show(char c) {
    if (c == '\n') return "end of line";
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7F)
      return "byte 0x" + hex(static_cast<unsigned char>(c), 2);
    return std::string("'") + c + "'";
  }
  static std::string hex(std::uint32_t v, int digits) {
    static const char* d = "0123456789ABCDEF";
    std::string s(static_cast<std::size_t>(digits), '0');
    for (int i = digits - 1; i >= 0; --i, v >>= 4) s[static_cast<std::size_t>(i)] = d[v & 15];
    return s;
  }
  std::string found() const {
    return pos_ >= src_.size() ? std::string("end of input") : show(src_[pos_]);
  }

  // -- lexing
  bool eof() const noexcept { return pos_ >= src_.size(); }
  char peek(std::size_t k = 0) const noexcept {
    return pos_ + k < src_.size() ? src_[pos_ + k] : '\0';
  }
  static bool word_char(char c) noexcept {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
  }
  void skip_space(bool newline_ok) {
    while (!eof()) {
      const char c = peek();
      if (c == ' ' || c == '\t' || (newline_ok && (c == '\n' || c == '\r'))) {
        ++pos_;
      } else if (c == '#') {
        while (!eof() && peek() != '\n' && peek() != '\r') ++pos_;
      } else {
        break;
      }
    }
  }
  std::string parse_name() {
    const std::size_t b = pos_;
    while (!eof() && word_char(peek())) ++pos_;
    if (b == pos_) error_at(pos_, "expected a rule name, found " + found() + ".");
    return std::string(src_.substr(b, pos_ - b));
  }
  std::uint32_t parse_hex(int digits) {
    std::uint32_t v = 0;
    for (int i = 0; i < digits; ++i) {
      const char c = peek();
      int d = -1;
      if (c >= '0' && c <= '9') d = c - '0';
      if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
      if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
      if (d < 0)
        error_at(pos_, "expected " + std::to_string(digits) +
                           " hexadecimal digits in an escape, "
                           "found " +
                           found() + ".");
      v = v * 16 + static_cast<std::uint32_t>(d);
      ++pos_;
    }
    return v;
  }
  /// One character of a literal or class (escapes decoded). Requires !eof().
  char32_t parse_char() {
    const std::size_t at = pos_;
    if (peek() == '\\') {
      ++pos_;
      const char e = peek();
      if (eof()) error_at(pos_, "expected an escape character after '\\', found end of input.");
      ++pos_;
      char32_t cp = 0;
      switch (e) {
        case 'x':
          cp = parse_hex(2);
          break;
        case 'u':
          cp = parse_hex(4);
          break;
        case 'U':
          cp = parse_hex(8);
          break;
        case 't':
          return U'\t';
        case 'r':
          return U'\r';
        case 'n':
          return U'\n';
        case '\\':
        case '"':
        case '[':
        case ']':
        case '-':
          return static_cast<char32_t>(e);
        default:
          error_at(at, "unknown escape '\\" + std::string(1, e) +
                           "' (expected one of \\n \\r \\t \\\\ \\\" \\[ \\] \\- \\x \\u \\U).");
      }
      if (cp > utf8::max_code_point)
        error_at(at, "escape \\U" + hex(cp, 8) + " is beyond U+10FFFF.");
      return cp;
    }
    const utf8::decoded d = utf8::decode(src_, pos_);
    if (!d.valid) error_at(pos_, "the grammar text is not valid UTF-8 here.");
    pos_ += d.length;
    return d.cp;
  }

  // -- rules
  std::int32_t rule_id(const std::string& name, std::size_t at) {
    auto it = ids_.find(name);
    if (it != ids_.end()) return it->second;
    const auto id = static_cast<std::int32_t>(rules_.size());
    ids_.emplace(name, id);
    rules_.emplace_back();
    names_.push_back(name);
    defined_.push_back(false);
    first_use_.push_back(at);
    def_at_.push_back(at);
    return id;
  }
  std::int32_t new_rule(const std::string& base) {
    // '_' cannot appear in a user's rule name, so a generated name never collides.
    const std::string name = base + "_" + std::to_string(++counter_);
    if (rules_.size() >= max_rules)
      error_at(pos_, "the grammar needs more than " + std::to_string(max_rules) +
                         " rules (x{m,n} adds one rule per optional copy).");
    const std::int32_t id = rule_id(name, pos_);
    defined_[static_cast<std::size_t>(id)] = true;
    return id;
  }
  std::int32_t add_class(std::vector<grammar::range> r, bool negate) {
    std::sort(r.begin(), r.end());
    std::vector<grammar::range> m;
    for (const auto& x : r) {
      if (!m.empty() && x.first <= m.back().second + 1)
        m.back().second = std::max(m.back().second, x.second);
      else
        m.push_back(x);
    }
    if (negate) {
      std::vector<grammar::range> c;
      char32_t next = 0;
      for (const auto& x : m) {
        if (x.first > next) c.emplace_back(next, x.first - 1);
        next = x.second + 1;
      }
      if (next <= utf8::max_code_point) c.emplace_back(next, utf8::max_code_point);
      m = std::move(c);
    }
    auto it = class_ids_.find(m);
    if (it != class_ids_.end()) return it->second;
    const auto id = static_cast<std::int32_t>(classes_.size());
    classes_.push_back(m);
    class_ids_.emplace(std::move(m), id);
    return id;
  }

  void parse_rule() {
    const std::size_t at = pos_;
    const std::string name = parse_name();
    skip_space(false);
    if (src_.substr(pos_, 3) != "::=")
      error_at(pos_, "expected '::=' after the rule name '" + name + "', found " + found() + ".");
    pos_ += 3;
    skip_space(true);
    const std::int32_t id = rule_id(name, at);
    if (defined_[static_cast<std::size_t>(id)])
      error_at(at, "rule '" + name + "' is defined twice.");
    defined_[static_cast<std::size_t>(id)] = true;
    def_at_[static_cast<std::size_t>(id)] = at;
    current_ = name;
    rules_[static_cast<std::size_t>(id)] = parse_alternates(false);
    if (peek() == '\r') ++pos_;
    if (peek() == '\n') {
      ++pos_;
    } else if (!eof()) {
      error_at(pos_, "expected a symbol, '|' or the end of the line in rule '" + name +
                         "', found " + found() + ".");
    }
    skip_space(true);
  }

  std::vector<seq> parse_alternates(bool nested) {
    std::vector<seq> alts;
    alts.push_back(parse_sequence(nested));
    while (peek() == '|') {
      ++pos_;
      skip_space(true);
      alts.push_back(parse_sequence(nested));
    }
    return alts;
  }

  seq parse_sequence(bool nested) {
    seq out;
    std::size_t last = 0;  // start of the last item in out
    bool have_item = false;
    while (!eof()) {
      const char c = peek();
      const std::size_t at = pos_;
      if (c == '"') {
        ++pos_;
        last = out.size();
        while (true) {
          if (eof()) error_at(at, "unterminated string literal (expected a closing '\"').");
          if (peek() == '"') break;
          if (peek() == '\n' || peek() == '\r')
            error_at(pos_, "unterminated string literal (a literal ends on its line).");
          const char32_t cp = parse_char();
          out.push_back({grammar::kind::chars, add_class({{cp, cp}}, false)});
        }
        ++pos_;
        have_item = true;
      } else if (c == '[') {
        ++pos_;
        bool negate = false;
        if (peek() == '^') {
          negate = true;
          ++pos_;
        }
        std::vector<grammar::range> r;
        while (true) {
          if (eof() || peek() == '\n' || peek() == '\r')
            error_at(at, "unterminated character class (expected ']').");
          if (peek() == ']') break;
          const char32_t lo = parse_char();
          char32_t hi = lo;
          if (peek() == '-' && pos_ + 1 < src_.size() && peek(1) != ']' && peek(1) != '\n' &&
              peek(1) != '\r') {
            ++pos_;
            const std::size_t hat = pos_;
            hi = parse_char();
            if (hi < lo) error_at(hat, "character range end is below its start.");
          }
          r.emplace_back(lo, hi);
        }
        ++pos_;
        last = out.size();
        out.push_back({grammar::kind::chars, add_class(std::move(r), negate)});
        have_item = true;
      } else if (word_char(c)) {
        const std::string name = parse_name();
        last = out.size();
        out.push_back({grammar::kind::ref, rule_id(name, at)});
        have_item = true;
      } else if (c == '(') {
        if (++depth_ > max_nesting)
          error_at(at, "groups are nested more than " + std::to_string(max_nesting) + " deep.");
        ++pos_;
        skip_space(true);
        std::vector<seq> alts = parse_alternates(true);
        if (peek() != ')')
          error_at(pos_, "expected ')' to close the group opened at " + where(at) + ", found " +
                             found() + ".");
        ++pos_;
        --depth_;
        const std::int32_t g = new_rule(current_);
        rules_[static_cast<std::size_t>(g)] = std::move(alts);
        last = out.size();
        out.push_back({grammar::kind::ref, g});
        have_item = true;
      } else if (c == '.') {
        ++pos_;
        last = out.size();
        out.push_back({grammar::kind::chars, add_class({{0, utf8::max_code_point}}, false)});
        have_item = true;
      } else if (c == '*' || c == '+' || c == '?' || c == '{') {
        if (!have_item)
          error_at(at,
                   "expected an item before the repetition operator '" + std::string(1, c) + "'.");
        ++pos_;
        std::int64_t lo = 0, hi = -1;
        if (c == '+') lo = 1;
        if (c == '?') hi = 1;
        if (c == '{') parse_braces(at, lo, hi);
        repeat(out, last, lo, hi);
      } else if (c == '<' || c == '!') {
        error_at(at, "token references (<[id]>, <text>, !<...>) are not supported.");
      } else {
        break;
      }
      skip_space(nested);
    }
    return out;
  }

  std::string where(std::size_t at) const {
    std::size_t line = 1, col = 1;
    for (std::size_t i = 0; i < at; ++i) {
      if (src_[i] == '\n') {
        ++line;
        col = 1;
      } else {
        ++col;
      }
    }
    return "line " + std::to_string(line) + ", column " + std::to_string(col);
  }

  std::int64_t parse_int() {
    const std::size_t b = pos_;
    std::int64_t v = 0;
    while (!eof() && peek() >= '0' && peek() <= '9') {
      v = v * 10 + (peek() - '0');
      if (v > max_repeat)
        error_at(b, "repetition count is above the limit of " + std::to_string(max_repeat) + ".");
      ++pos_;
    }
    if (b == pos_) error_at(pos_, "expected a number, found " + found() + ".");
    return v;
  }

  void parse_braces(std::size_t at, std::int64_t& lo, std::int64_t& hi) {
    skip_space(false);
    lo = 0;
    hi = -1;
    if (peek() == ',') {
      ++pos_;
      skip_space(false);
      hi = parse_int();
    } else {
      lo = parse_int();
      skip_space(false);
      if (peek() == ',') {
        ++pos_;
        skip_space(false);
        if (peek() != '}') hi = parse_int();
      } else {
        hi = lo;
      }
    }
    skip_space(false);
    if (peek() != '}')
      error_at(pos_, "expected '}' to close the repetition opened at " + where(at) + ", found " +
                         found() + ".");
    ++pos_;
    if (hi >= 0 && hi < lo) error_at(at, "repetition {m,n} has n < m.");
  }

  /// Replaces out[last..] (one item) by lo copies and up to hi (-1: unbounded) in total.
  void repeat(seq& out, std::size_t last, std::int64_t lo, std::int64_t hi) {
    seq item(out.begin() + static_cast<std::ptrdiff_t>(last), out.end());
    out.resize(last);
    if (item.size() != 1) {
      const std::int32_t w = new_rule(current_);
      rules_[static_cast<std::size_t>(w)] = {item};
      item = {{grammar::kind::ref, w}};
    }
    const sym x = item[0];
    for (std::int64_t i = 0; i < lo; ++i) out.push_back(x);
    if (hi < 0) {
      const std::int32_t r = new_rule(current_);  // r ::= x r |
      rules_[static_cast<std::size_t>(r)] = {{x, {grammar::kind::ref, r}}, {}};
      out.push_back({grammar::kind::ref, r});
    } else if (hi > lo) {
      std::int32_t inner = -1;  // opt_k ::= x opt_{k-1} |
      for (std::int64_t k = 0; k < hi - lo; ++k) {
        const std::int32_t r = new_rule(current_);
        seq s{x};
        if (inner >= 0) s.push_back({grammar::kind::ref, inner});
        rules_[static_cast<std::size_t>(r)] = {s, {}};
        inner = r;
      }
      out.push_back({grammar::kind::ref, inner});
    }
  }

  // -- checks and flattening
  std::shared_ptr<const grammar> finish() {
    const auto n = rules_.size();
    for (std::size_t r = 0; r < n; ++r)
      if (!defined_[r])
        error_at(first_use_[r], "rule '" + names_[r] + "' is used but not defined.");
    const auto root_it = ids_.find("root");
    if (root_it == ids_.end()) error_at(src_.size(), "the grammar has no 'root' rule.");
    const std::int32_t root = root_it->second;

    // Reachable rules from root.
    std::vector<char> reach(n, 0);
    std::vector<std::int32_t> todo{root};
    reach[static_cast<std::size_t>(root)] = 1;
    while (!todo.empty()) {
      const auto r = static_cast<std::size_t>(todo.back());
      todo.pop_back();
      for (const seq& s : rules_[r])
        for (const sym& x : s)
          if (x.k == grammar::kind::ref && !reach[static_cast<std::size_t>(x.arg)]) {
            reach[static_cast<std::size_t>(x.arg)] = 1;
            todo.push_back(x.arg);
          }
    }
    const std::vector<char> nullable = closure(true), productive = closure(false);
    std::string stuck;
    std::size_t stuck_at = 0;
    for (std::size_t r = 0; r < n; ++r)
      if (reach[r] && !productive[r]) {
        if (stuck.empty()) stuck_at = def_at_[r];
        stuck += (stuck.empty() ? "'" : ", '") + names_[r] + "'";
      }
    if (!stuck.empty())
      error_at(stuck_at, "rules that can never finish: " + stuck +
                             " (every alternative refers to a rule that never finishes, or to an "
                             "empty character class).");
    check_left_recursion(reach, nullable);

    auto g = std::make_shared<grammar>();
    g->classes_ = std::move(classes_);
    g->names_ = names_;
    g->root_ = root;
    g->alts_.resize(n);
    for (std::size_t r = 0; r < n; ++r) {
      for (const seq& s : rules_[r]) {
        g->alts_[r].push_back(static_cast<std::int32_t>(g->elems_.size()));
        for (const sym& x : s) g->elems_.push_back({x.k, x.arg});
        g->elems_.push_back({grammar::kind::end, 0});
      }
    }
    g->source_ = std::string(src_);
    return g;
  }

  /// Rules that derive the empty text (nullable) or some finite text (!nullable: productive),
  /// by counting down each alternative's unresolved references (linear in the grammar size).
  std::vector<char> closure(bool nullable) const {
    const auto n = rules_.size();
    std::vector<char> yes(n, 0);
    std::vector<std::pair<std::int32_t, std::int32_t>> alt_of;  // (rule, unresolved refs)
    std::vector<std::vector<std::int32_t>> uses(n);             // rule -> alternatives using it
    std::vector<std::int32_t> queue;
    for (std::size_t r = 0; r < n; ++r)
      for (const seq& sq : rules_[r]) {
        const auto a = static_cast<std::int32_t>(alt_of.size());
        std::int32_t need = 0;
        bool blocked = false;
        for (const sym& x : sq) {
          if (x.k == grammar::kind::chars) {
            blocked = blocked || nullable || classes_[static_cast<std::size_t>(x.arg)].empty();
          } else {
            ++need;
            uses[static_cast<std::size_t>(x.arg)].push_back(a);
          }
        }
        alt_of.emplace_back(static_cast<std::int32_t>(r), blocked ? -1 : need);
        if (!blocked && need == 0 && !yes[r]) {
          yes[r] = 1;
          queue.push_back(static_cast<std::int32_t>(r));
        }
      }
    while (!queue.empty()) {
      const auto q = static_cast<std::size_t>(queue.back());
      queue.pop_back();
      for (std::int32_t a : uses[q]) {
        auto& [r, need] = alt_of[static_cast<std::size_t>(a)];
        if (need > 0 && --need == 0 && !yes[static_cast<std::size_t>(r)]) {
          yes[static_cast<std::size_t>(r)] = 1;
          queue.push_back(r);
        }
      }
    }
    return yes;
  }

  void check_left_recursion(const std::vector<char>& reach, const std::vector<char>& nullable) {
    const auto n = rules_.size();
    std::vector<std::vector<std::int32_t>> left(n);  // rules reachable before a character
    for (std::size_t r = 0; r < n; ++r)
      for (const seq& sq : rules_[r])
        for (const sym& x : sq) {
          if (x.k == grammar::kind::chars) break;
          left[r].push_back(x.arg);
          if (!nullable[static_cast<std::size_t>(x.arg)]) break;
        }
    // Iterative depth-first search; `path` holds (rule, next edge) of the rules on the path.
    std::vector<char> color(n, 0);  // 0 new, 1 on the path, 2 done
    std::vector<std::pair<std::int32_t, std::size_t>> path;
    for (std::size_t r0 = 0; r0 < n; ++r0) {
      if (!reach[r0] || color[r0]) continue;
      color[r0] = 1;
      path.emplace_back(static_cast<std::int32_t>(r0), 0);
      while (!path.empty()) {
        auto& [r, k] = path.back();
        const auto& edges = left[static_cast<std::size_t>(r)];
        if (k == edges.size()) {
          color[static_cast<std::size_t>(r)] = 2;
          path.pop_back();
          continue;
        }
        const std::int32_t q = edges[k++];
        if (color[static_cast<std::size_t>(q)] == 1) left_recursion_error(path, q);
        if (color[static_cast<std::size_t>(q)] == 0) {
          color[static_cast<std::size_t>(q)] = 1;
          path.emplace_back(q, 0);
        }
      }
    }
  }
  [[noreturn]] void left_recursion_error(
      const std::vector<std::pair<std::int32_t, std::size_t>>& path, std::int32_t q) const {
    std::string cyc;
    auto it = std::find_if(path.begin(), path.end(), [&](const auto& e) { return e.first == q; });
    for (; it != path.end(); ++it) cyc += user_name(it->first) + " -> ";
    cyc += user_name(q);
    const bool generated = cyc.find('_') != std::string::npos;
    error_at(def_at_[static_cast<std::size_t>(q)],
             "left recursion is not supported: " + cyc +
                 " (a rule reaches itself before any character; " +
                 (generated ? "here a repetition *, + or {m,} of an item that can match "
                              "empty text, e.g. (\"a\"?)*)."
                            : "rewrite it as a repetition)."));
  }
  std::string user_name(std::int32_t r) const { return names_[static_cast<std::size_t>(r)]; }

  std::string_view src_, doc_;
  std::size_t pos_ = 0;
  std::vector<std::vector<seq>> rules_;
  std::vector<std::string> names_;
  std::vector<char> defined_;
  std::vector<std::size_t> first_use_;
  std::vector<std::size_t> def_at_;  // where the rule (or the group that made it) is defined
  std::unordered_map<std::string, std::int32_t> ids_;
  std::vector<std::vector<grammar::range>> classes_;
  struct range_hash {
    std::size_t operator()(const std::vector<grammar::range>& v) const noexcept {
      std::size_t h = v.size();
      for (const auto& r : v) h = h * 1000003u ^ (r.first * 31u + r.second);
      return h;
    }
  };
  std::unordered_map<std::vector<grammar::range>, std::int32_t, range_hash> class_ids_;
  std::string current_;
  int counter_ = 0;
  int depth_ = 0;
};

}  // namespace detail

inline std::shared_ptr<const grammar> compile_grammar(std::string_view gbnf, std::string_view doc) {
  return detail::grammar_builder(gbnf, doc).build();
}

inline std::string json_value_rules(int max_whitespace) {
  const std::string ws = max_whitespace < 0 ? "[ \\t\\n\\r]*"
                         : max_whitespace == 0
                             ? "\"\""
                             : "[ \\t\\n\\r]{0," + std::to_string(max_whitespace) + "}";
  return "value ::= object | array | string | number | \"true\" | \"false\" | \"null\"\n"
         "object ::= \"{\" ws ( member ( \",\" ws member )* )? \"}\"\n"
         "member ::= string ws \":\" ws value ws\n"
         "array ::= \"[\" ws ( value ws ( \",\" ws value ws )* )? \"]\"\n"
         "string ::= \"\\\"\" char* \"\\\"\"\n"
         "char ::= [^\"\\\\\\x00-\\x1F] | \"\\\\\" ( [\"\\\\/bfnrt] | \"u\" [0-9a-fA-F]{4} )\n"
         "number ::= \"-\"? ( \"0\" | [1-9] [0-9]* ) ( \".\" [0-9]+ )? ( [eE] [-+]? [0-9]+ )?\n"
         "ws ::= " +
         ws + "\n";
}

inline std::string json_gbnf(json_grammar_options o) {
  std::string g = "# JSON (RFC 8259)";
  g += o.object_root ? ", the document an object\nroot ::= ws object ws\n"
                     : ", any value\nroot ::= ws value ws\n";
  return g + json_value_rules(o.max_whitespace);
}

// -- grammar_matcher

inline grammar_matcher::grammar_matcher(std::shared_ptr<const grammar> g) : g_(std::move(g)) {
  if (!g_) fail(errc::value, "tfm::infer::grammar_matcher: the grammar is null.");
  clear();
}

inline void grammar_matcher::clear() {
  frames_.clear();
  frame_ids_.clear();
  states_.clear();
  state_ids_.clear();
  tables_.clear();
  visited_.clear();
  epoch_ = 0;
  std::vector<std::int32_t> out;
  ++epoch_;
  complete_hit_ = false;
  for (std::int32_t a : g_->alternatives(g_->root())) {
    if (g_->elements()[static_cast<std::size_t>(a)].k == grammar::kind::end)
      expand(-1, out);
    else
      expand(intern_frame(a, -1), out);
  }
  if (complete_hit_) out.push_back(-1);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  state st;
  st.frames = std::move(out);
  start_ = intern_state(std::move(st));
}

inline std::int32_t grammar_matcher::intern_frame(std::int32_t pos, std::int32_t parent) {
  const std::uint64_t key = (static_cast<std::uint64_t>(static_cast<std::uint32_t>(pos)) << 32) |
                            static_cast<std::uint32_t>(parent);
  auto [it, fresh] = frame_ids_.try_emplace(key, static_cast<std::int32_t>(frames_.size()));
  if (fresh) {
    frames_.push_back({pos, parent});
    visited_.push_back(0);
  }
  return it->second;
}

inline grammar_matcher::state_id grammar_matcher::intern_state(state&& st) {
  std::string key(reinterpret_cast<const char*>(st.frames.data()),
                  st.frames.size() * sizeof(std::int32_t));
  key.push_back(static_cast<char>(st.need));
  key.append(reinterpret_cast<const char*>(st.partial), st.npartial);
  auto [it, fresh] = state_ids_.try_emplace(std::move(key), static_cast<state_id>(states_.size()));
  if (fresh) states_.push_back(std::move(st));
  return it->second;
}

inline std::int32_t grammar_matcher::table_of(state_id s) {
  state& st = states_[static_cast<std::size_t>(s)];
  if (st.table < 0) {
    st.table = static_cast<std::int32_t>(tables_.size() / 256);
    tables_.resize(tables_.size() + 256, unknown_);
  }
  return st.table;
}

// Pushes onto `out` the frames whose top is a character class reachable from frame f without
// consuming input; f == -1 (the bottom) records that the document may end.
inline void grammar_matcher::expand(std::int32_t f0, std::vector<std::int32_t>& out) {
  const auto& el = g_->elements();
  work_.clear();
  work_.push_back(f0);
  while (!work_.empty()) {
    const std::int32_t f = work_.back();
    work_.pop_back();
    if (f < 0) {
      complete_hit_ = true;
      continue;
    }
    if (visited_[static_cast<std::size_t>(f)] == epoch_) continue;
    visited_[static_cast<std::size_t>(f)] = epoch_;
    const frame fr = frames_[static_cast<std::size_t>(f)];
    const grammar::element e = el[static_cast<std::size_t>(fr.pos)];
    if (e.k == grammar::kind::chars) {
      out.push_back(f);
      continue;
    }
    const std::int32_t rest = el[static_cast<std::size_t>(fr.pos) + 1].k == grammar::kind::end
                                  ? fr.parent
                                  : intern_frame(fr.pos + 1, fr.parent);
    for (std::int32_t a : g_->alternatives(e.arg))
      work_.push_back(
          el[static_cast<std::size_t>(a)].k == grammar::kind::end ? rest : intern_frame(a, rest));
  }
}

inline grammar_matcher::state_id grammar_matcher::advance(const std::vector<std::int32_t>& frames,
                                                          char32_t cp) {
  std::vector<std::int32_t> out;
  ++epoch_;
  complete_hit_ = false;
  const auto& el = g_->elements();
  for (std::int32_t f : frames) {
    if (f < 0) continue;
    const frame fr = frames_[static_cast<std::size_t>(f)];
    if (!g_->class_contains(el[static_cast<std::size_t>(fr.pos)].arg, cp)) continue;
    if (el[static_cast<std::size_t>(fr.pos) + 1].k == grammar::kind::end)
      expand(fr.parent, out);
    else
      expand(intern_frame(fr.pos + 1, fr.parent), out);
  }
  if (complete_hit_) out.push_back(-1);
  if (out.empty()) return dead;
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  state st;
  st.frames = std::move(out);
  return intern_state(std::move(st));
}

// True when some code point that starts with the pending bytes is well-formed and matches the
// top of some stack.
inline bool grammar_matcher::partial_feasible(const state& st) const {
  const int len = st.npartial + st.need;
  char32_t lo = st.partial[0] & (len == 2 ? 0x1F : len == 3 ? 0x0F : 0x07), hi;
  for (int i = 1; i < st.npartial; ++i) lo = (lo << 6) | (st.partial[i] & 0x3F);
  hi = lo;
  for (int i = 0; i < st.need; ++i) {
    lo = lo << 6;
    hi = (hi << 6) | 0x3F;
  }
  const char32_t min_cp = len == 2 ? 0x80 : len == 3 ? 0x800 : 0x10000;
  const char32_t max_cp = len == 2 ? 0x7FF : len == 3 ? 0xFFFF : 0x10FFFF;
  lo = std::max(lo, min_cp);
  hi = std::min(hi, max_cp);
  if (lo > hi) return false;
  const auto& el = g_->elements();
  const auto hits = [&](char32_t a, char32_t b) {
    if (a > b) return false;
    for (std::int32_t f : st.frames) {
      if (f < 0) continue;
      const std::int32_t c =
          el[static_cast<std::size_t>(frames_[static_cast<std::size_t>(f)].pos)].arg;
      if (g_->class_intersects(c, a, b)) return true;
    }
    return false;
  };
  // Surrogates (U+D800..U+DFFF) are not scalar values.
  return hits(lo, std::min<char32_t>(hi, 0xD7FF)) || hits(std::max<char32_t>(lo, 0xE000), hi);
}

inline grammar_matcher::state_id grammar_matcher::compute(state_id s, unsigned char b) {
  const state& cur = states_[static_cast<std::size_t>(s)];
  if (cur.need == 0) {
    if (b < 0x80) return advance(cur.frames, b);
    int len = 0;
    if (b >= 0xC2 && b <= 0xDF) len = 2;
    if (b >= 0xE0 && b <= 0xEF) len = 3;
    if (b >= 0xF0 && b <= 0xF4) len = 4;
    if (len == 0) return dead;
    state st;
    st.frames = cur.frames;
    st.partial[0] = b;
    st.npartial = 1;
    st.need = static_cast<std::uint8_t>(len - 1);
    if (!partial_feasible(st)) return dead;
    return intern_state(std::move(st));
  }
  if ((b & 0xC0) != 0x80) return dead;
  if (cur.need == 1) {
    const int len = cur.npartial + 1;
    char32_t cp = cur.partial[0] & (len == 2 ? 0x1F : len == 3 ? 0x0F : 0x07);
    for (int i = 1; i < cur.npartial; ++i) cp = (cp << 6) | (cur.partial[i] & 0x3F);
    cp = (cp << 6) | (b & 0x3F);
    const char32_t min_cp = len == 2 ? 0x80 : len == 3 ? 0x800 : 0x10000;
    if (cp < min_cp || !utf8::is_scalar_value(cp)) return dead;
    const std::vector<std::int32_t> frames = cur.frames;  // advance() may grow states_
    return advance(frames, cp);
  }
  state st;
  st.frames = cur.frames;
  std::memcpy(st.partial, cur.partial, 3);
  st.partial[cur.npartial] = b;
  st.npartial = static_cast<std::uint8_t>(cur.npartial + 1);
  st.need = static_cast<std::uint8_t>(cur.need - 1);
  if (!partial_feasible(st)) return dead;
  return intern_state(std::move(st));
}

inline grammar_matcher::state_id grammar_matcher::rebase(state_id keep) {
  if (keep == dead) {
    clear();
    return dead;
  }
  // Each stack of `keep` as its list of positions, top first.
  const state old = states_[static_cast<std::size_t>(keep)];
  std::vector<std::vector<std::int32_t>> stacks;
  bool may_end = false;
  for (std::int32_t f : old.frames) {
    if (f < 0) {
      may_end = true;
      continue;
    }
    std::vector<std::int32_t> p;
    for (std::int32_t x = f; x >= 0; x = frames_[static_cast<std::size_t>(x)].parent)
      p.push_back(frames_[static_cast<std::size_t>(x)].pos);
    stacks.push_back(std::move(p));
  }
  clear();
  state st;
  if (may_end) st.frames.push_back(-1);
  for (const auto& p : stacks) {
    std::int32_t f = -1;
    for (auto it = p.rbegin(); it != p.rend(); ++it) f = intern_frame(*it, f);
    st.frames.push_back(f);
  }
  std::sort(st.frames.begin(), st.frames.end());
  std::memcpy(st.partial, old.partial, 3);
  st.npartial = old.npartial;
  st.need = old.need;
  return intern_state(std::move(st));
}

// -- grammar_vocabulary

inline grammar_vocabulary::grammar_vocabulary(std::vector<std::string> token_bytes)
    : bytes_(std::move(token_bytes)) {
  if (bytes_.size() > static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max()))
    fail(errc::value, "tfm::infer::grammar_vocabulary: too many tokens (", bytes_.size(), ").");
  std::vector<std::int32_t> order;
  for (std::size_t i = 0; i < bytes_.size(); ++i)
    if (!bytes_[i].empty()) order.push_back(static_cast<std::int32_t>(i));
  std::sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t b) {
    const auto& x = bytes_[static_cast<std::size_t>(a)];
    const auto& y = bytes_[static_cast<std::size_t>(b)];
    return x != y ? x < y : a < b;
  });
  nodes_.push_back({0, 0, 0, 0, 0});
  std::vector<std::int32_t> path{0};  // node index per depth along the current string
  std::string_view prev;
  for (std::int32_t id : order) {
    const std::string& s = bytes_[static_cast<std::size_t>(id)];
    std::size_t lcp = 0;
    while (lcp < prev.size() && lcp < s.size() && prev[lcp] == s[lcp]) ++lcp;
    while (path.size() > lcp + 1) {
      nodes_[static_cast<std::size_t>(path.back())].end = static_cast<std::int32_t>(nodes_.size());
      path.pop_back();
    }
    for (std::size_t d = lcp; d < s.size(); ++d) {
      const auto tb = static_cast<std::int32_t>(ids_.size());
      nodes_.push_back(
          {static_cast<std::int32_t>(d + 1), 0, tb, tb, static_cast<unsigned char>(s[d])});
      path.push_back(static_cast<std::int32_t>(nodes_.size() - 1));
    }
    ids_.push_back(id);
    nodes_[static_cast<std::size_t>(path.back())].tok_end = static_cast<std::int32_t>(ids_.size());
    max_depth_ = std::max(max_depth_, static_cast<std::int32_t>(s.size()));
    prev = s;
  }
  while (!path.empty()) {
    nodes_[static_cast<std::size_t>(path.back())].end = static_cast<std::int32_t>(nodes_.size());
    path.pop_back();
  }
}

// -- grammar_constraint

inline grammar_constraint::grammar_constraint(std::shared_ptr<const grammar> g,
                                              std::shared_ptr<const grammar_vocabulary> vocab,
                                              std::vector<std::int32_t> eos_ids)
    : m_(std::move(g)), vocab_(std::move(vocab)), eos_(std::move(eos_ids)) {
  if (!vocab_) fail(errc::value, "tfm::infer::grammar_constraint: the vocabulary is null.");
  for (std::int32_t e : eos_)
    if (e < 0 || static_cast<std::size_t>(e) >= vocab_->size())
      fail(errc::value, "tfm::infer::grammar_constraint: end-of-sequence id ", e,
           " is outside the vocabulary (", vocab_->size(), " tokens).");
  cur_ = m_.start();
  walk_.assign(static_cast<std::size_t>(vocab_->max_depth()) + 1, grammar_matcher::dead);
}

inline void grammar_constraint::reset() {
  finished_ = false;
  cache_.clear();
  m_.rebase(grammar_matcher::dead);
  cur_ = m_.start();
}

inline void grammar_constraint::maybe_rebase() {
  if (m_.state_count() > max_states || m_.frame_count() > max_frames) {
    cur_ = m_.rebase(cur_);
    cache_.clear();
  }
}

inline void grammar_constraint::compute_allowed(std::vector<std::uint64_t>& bits) {
  bits.assign((vocab_->size() + 63) / 64, 0);
  if (finished_) return;
  const auto& nodes = vocab_->nodes();
  const auto& ids = vocab_->ids();
  walk_[0] = cur_;
  const auto n = static_cast<std::int32_t>(nodes.size());
  for (std::int32_t i = 1; i < n;) {
    const grammar_vocabulary::node& nd = nodes[static_cast<std::size_t>(i)];
    const grammar_matcher::state_id s =
        m_.next(walk_[static_cast<std::size_t>(nd.depth - 1)], nd.byte);
    if (s == grammar_matcher::dead) {
      i = nd.end;
      continue;
    }
    walk_[static_cast<std::size_t>(nd.depth)] = s;
    for (std::int32_t k = nd.tok_begin; k < nd.tok_end; ++k) {
      const auto id = static_cast<std::size_t>(ids[static_cast<std::size_t>(k)]);
      bits[id >> 6] |= std::uint64_t{1} << (id & 63);
    }
    ++i;
  }
  for (std::int32_t e : eos_) {
    const auto id = static_cast<std::size_t>(e);
    if (m_.complete(cur_))
      bits[id >> 6] |= std::uint64_t{1} << (id & 63);
    else
      bits[id >> 6] &= ~(std::uint64_t{1} << (id & 63));
  }
}

inline const std::vector<std::uint64_t>& grammar_constraint::allowed() {
  maybe_rebase();
  if (!cache_masks) {
    cache_.resize(1);
    compute_allowed(cache_[0].bits);
    cache_[0].s = grammar_matcher::dead;
    cache_[0].used = 0;
    return cache_[0].bits;
  }
  ++clock_;
  for (cached_mask& c : cache_)
    if (c.s == cur_ && !finished_) {
      c.used = clock_;
      return c.bits;
    }
  if (cache_.size() < cache_slots_) {
    cache_.push_back({grammar_matcher::dead, 0, {}});
  }
  auto victim = std::min_element(cache_.begin(), cache_.end(),
                                 [](const auto& a, const auto& b) { return a.used < b.used; });
  compute_allowed(victim->bits);
  victim->s = finished_ ? grammar_matcher::dead : cur_;
  victim->used = finished_ ? 0 : clock_;
  return victim->bits;
}

inline index_t grammar_constraint::mask(float* logits, index_t n) {
  if (n < 0) fail(errc::value, "tfm::infer::grammar_constraint::mask: n is negative (", n, ").");
  const std::vector<std::uint64_t>& bits = allowed();
  const auto v = static_cast<index_t>(vocab_->size());
  const float ninf = -std::numeric_limits<float>::infinity();
  index_t kept = 0;
  for (index_t i = 0; i < n; ++i) {
    const bool ok = i < v && ((bits[static_cast<std::size_t>(i) >> 6] >> (i & 63)) & 1u);
    if (ok)
      ++kept;
    else
      logits[i] = ninf;
  }
  return kept;
}

inline void grammar_constraint::accept(std::int32_t token) {
  if (finished_)
    fail(errc::value, "tfm::infer::grammar_constraint::accept: token ", token,
         " follows the end-of-sequence token.");
  const std::string& b = vocab_->bytes(token);
  if (is_eos(token)) {
    if (!m_.complete(cur_))
      fail(errc::value, "tfm::infer::grammar_constraint::accept: end-of-sequence token ", token,
           " before the document is complete.");
    finished_ = true;
    return;
  }
  if (b.empty())
    fail(errc::value, "tfm::infer::grammar_constraint::accept: token ", token,
         " has no text and cannot continue the document.");
  maybe_rebase();
  const grammar_matcher::state_id s = m_.feed(cur_, b);
  if (s == grammar_matcher::dead)
    fail(errc::value, "tfm::infer::grammar_constraint::accept: token ", token, " (\"",
         utf8::sanitize(b), "\") cannot continue the document here.");
  cur_ = s;
}

inline void grammar_constraint::accept_bytes(std::string_view bytes) {
  if (finished_)
    fail(errc::value,
         "tfm::infer::grammar_constraint::accept_bytes: text follows the end-of-sequence token.");
  maybe_rebase();
  const grammar_matcher::state_id s = m_.feed(cur_, bytes);
  if (s == grammar_matcher::dead)
    fail(errc::value, "tfm::infer::grammar_constraint::accept_bytes: \"", utf8::sanitize(bytes),
         "\" cannot continue the document here.");
  cur_ = s;
}

}  // namespace infer
TFM_END_NAMESPACE
