// tools/tfm/cli.hpp: the small command-line toolkit behind `tfm <subcommand>` (not part of the
// library). Each subcommand declares its options once in a cli::parser; --help text, parsing and
// the one-line usage errors all come from that declaration.
//
//   cli::parser p("tfm inspect", "FILE", "metadata and tensor table of a GGUF or safetensors
//   file"); bool json = false;  int limit = 8; p.flag("--json", "print JSON", json);
//   p.option("--limit", "N", "array elements shown", limit);
//   auto files = p.parse(args);   // positionals; throws cli::usage_error, or cli::help_shown
//
// Exit statuses (main.cpp): 0 ok, 1 error (a tfm::error or I/O failure: one line on stderr),
// 2 bad usage (unknown flag, missing or malformed value: one line plus "see --help").
#pragma once

#include <cctype>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

#include "typeformer/tokenizer/detail/json.hpp"

namespace cli {

/// A mistake in the command line; main() prints it with a pointer to --help and exits 2.
struct usage_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
/// Thrown after --help was printed (exit 0).
struct help_shown {};

/// Parses a whole string as T; false on anything else (sign, range, trailing characters).
template <class T>
bool parse_number(std::string_view s, T& out) {
  if (s.empty()) return false;
  if constexpr (std::is_floating_point_v<T>) {
    try {
      std::size_t used = 0;
      const double v = std::stod(std::string(s), &used);
      if (used != s.size()) return false;
      out = static_cast<T>(v);
      return true;
    } catch (const std::exception&) {
      return false;
    }
  } else {
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc() && p == s.data() + s.size();
  }
}

class parser {
 public:
  parser(std::string command, std::string positionals, std::string summary)
      : command_(std::move(command)),
        positionals_(std::move(positionals)),
        summary_(std::move(summary)) {}

  /// A boolean switch.
  void flag(std::string name, std::string help, bool& target) {
    opts_.push_back(
        {std::move(name), "", std::move(help), [&target](std::string_view) { target = true; }});
  }
  /// An option with a value of type T (string or number).
  template <class T>
  void option(std::string name, std::string value_name, std::string help, T& target) {
    std::string shown_default = default_text(target);
    if (!shown_default.empty()) help += " (default " + shown_default + ")";
    auto set = [&target, name](std::string_view v) {
      if constexpr (std::is_same_v<T, std::string>) {
        target = std::string(v);
      } else if (!parse_number(v, target)) {
        throw usage_error(name + " needs a number, not '" + std::string(v) + "'");
      }
    };
    opts_.push_back({std::move(name), std::move(value_name), std::move(help), set});
  }
  /// An option restricted to a list of words.
  void choice(std::string name, std::vector<std::string> words, std::string help,
              std::string& target) {
    std::string list;
    for (const auto& w : words) list += (list.empty() ? "" : "|") + w;
    help += " (default " + target + ")";
    auto set = [&target, words, name, list](std::string_view v) {
      for (const auto& w : words)
        if (w == v) {
          target = w;
          return;
        }
      throw usage_error(name + " is one of " + list + ", not '" + std::string(v) + "'");
    };
    opts_.push_back({std::move(name), list, std::move(help), set});
  }

  /// An option whose value goes to `set` (which throws usage_error when it is malformed); the
  /// help line is shown as given. Repeating the option calls `set` again.
  void custom(std::string name, std::string value_name, std::string help,
              std::function<void(std::string_view)> set) {
    opts_.push_back({std::move(name), std::move(value_name), std::move(help), std::move(set)});
  }
  /// A heading in --help before the options declared next.
  void section(std::string title) { opts_.push_back({"", "", std::move(title), nullptr}); }
  /// A paragraph at the end of --help.
  void epilog(std::string text) { epilog_ = std::move(text); }

  /// Whether option `name` was on the command line of the last parse().
  bool given(const std::string& name) const {
    for (const auto& n : given_)
      if (n == name) return true;
    return false;
  }
  /// The options of the last parse(), in order, each once.
  const std::vector<std::string>& given_names() const { return given_; }

  /// Parses args (after the subcommand name); returns the positional arguments. "--" ends the
  /// options; "-h"/"--help" prints help() and throws help_shown.
  std::vector<std::string> parse(const std::vector<std::string>& args) const {
    std::vector<std::string> pos;
    given_.clear();
    bool options_done = false;
    for (std::size_t i = 0; i < args.size(); ++i) {
      const std::string& a = args[i];
      if (options_done || a.size() < 2 || a[0] != '-' || is_negative_number(a)) {
        pos.push_back(a);
        continue;
      }
      if (a == "--") {
        options_done = true;
        continue;
      }
      if (a == "-h" || a == "--help") {
        std::fputs(help().c_str(), stdout);
        throw help_shown{};
      }
      std::string name = a, value;
      bool has_inline = false;
      if (auto eq = a.find('='); eq != std::string::npos && a.rfind("--", 0) == 0) {
        name = a.substr(0, eq);
        value = a.substr(eq + 1);
        has_inline = true;
      }
      const option_def* o = find(name);
      if (o == nullptr) throw usage_error("unknown option " + name);
      if (!given(name)) given_.push_back(name);
      if (o->value_name.empty()) {
        if (has_inline) throw usage_error(name + " takes no value");
        o->set("");
        continue;
      }
      if (!has_inline) {
        if (i + 1 >= args.size())
          throw usage_error(name + " needs a value (" + o->value_name + ")");
        value = args[++i];
      }
      o->set(value);
    }
    return pos;
  }

  std::string help() const {
    std::string s = command_ + ": " + summary_ + "\n\nusage: " + command_ + " [options] " +
                    positionals_ + "\n\noptions:\n";
    for (const auto& o : opts_) {
      if (o.name.empty()) {  // a section()
        s += o.help + "\n";
        continue;
      }
      std::string left = "  " + o.name + (o.value_name.empty() ? "" : " " + o.value_name);
      if (left.size() < 28)
        left.resize(28, ' ');
      else
        left += "\n" + std::string(28, ' ');
      s += left + wrap(o.help, 28, 100) + "\n";
    }
    s += "  -h, --help                this text\n";
    if (!epilog_.empty()) s += "\n" + epilog_;
    return s;
  }
  const std::string& command() const { return command_; }

 private:
  struct option_def {
    std::string name, value_name, help;
    std::function<void(std::string_view)> set;
  };
  const option_def* find(const std::string& name) const {
    for (const auto& o : opts_)
      if (!o.name.empty() && o.name == name) return &o;
    return nullptr;
  }
  // `text` broken at spaces into lines of at most `width` columns, continuation lines indented
  // by `indent` (the first line starts at column `indent`).
  static std::string wrap(const std::string& text, std::size_t indent, std::size_t width) {
    std::string out;
    std::size_t col = indent, pos = 0;
    while (pos < text.size()) {
      std::size_t end = text.find(' ', pos);
      if (end == std::string::npos) end = text.size();
      const std::size_t len = end - pos;
      if (col > indent && col + 1 + len > width) {
        out += "\n" + std::string(indent, ' ');
        col = indent;
      } else if (col > indent) {
        out += ' ';
        ++col;
      }
      out.append(text, pos, len);
      col += len;
      pos = end + 1;
    }
    return out;
  }
  static bool is_negative_number(const std::string& a) {
    return a.size() > 1 && a[0] == '-' && (std::isdigit(static_cast<unsigned char>(a[1])) != 0);
  }
  template <class T>
  static std::string default_text(const T& v) {
    if constexpr (std::is_same_v<T, std::string>)
      return v.empty() ? "" : v;
    else {
      std::string s = std::to_string(v);
      if constexpr (std::is_floating_point_v<T>) {
        while (s.size() > 1 && s.back() == '0') s.pop_back();
        if (!s.empty() && s.back() == '.') s.pop_back();
      }
      return s;
    }
  }

  std::string command_, positionals_, summary_, epilog_;
  std::vector<option_def> opts_;
  mutable std::vector<std::string> given_;
};

/// JSON string literal of s (invalid UTF-8 becomes U+FFFD, so the output is valid JSON).
inline std::string json_quote(std::string_view s) {
  std::string out;
  tfm::detail::json::append_quoted(out, s);
  return out;
}

/// One subcommand of `tfm`.
struct command {
  const char* name;
  const char* summary;
  int (*run)(const std::vector<std::string>& args);
};

}  // namespace cli
