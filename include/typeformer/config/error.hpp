// typeformer/config/error.hpp
//
// WHAT THIS REPRESENTS
//   The single error mechanism of the library. Every failure a user can cause (a wrong shape, a
//   bad index, a malformed file, an unknown token, a bad argument) goes through tfm::raise().
//   With exceptions (the default) raise() throws the matching exception type below. In a
//   TFM_NO_EXCEPTIONS build it calls the handler installed with tfm::set_error_handler(); the
//   handler must not return (it may longjmp, reset the device, or abort). If it does return, or
//   none is installed, raise() prints the message to stderr and calls std::abort().
//
//   It lives in config/ (not core/) so that layers that depend on nothing but config and the
//   standard library, such as tokenizer/, share the same mechanism.
#pragma once

#include "typeformer/config/config.hpp"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>

TFM_BEGIN_NAMESPACE

/// The kinds of failure; each has its own exception type.
enum class errc {
  shape,        ///< extents do not agree, bad reshape/view/axis   -> tfm::shape_error
  index,        ///< element or slice index out of range  -> tfm::index_error (a shape_error)
  value,        ///< bad argument value (negative size, bad flag)   -> tfm::value_error
  parse,        ///< malformed file or text format                  -> tfm::parse_error
  io,           ///< file system failure                            -> tfm::io_error
  unsupported,  ///< valid request this build cannot serve          -> tfm::unsupported_error
};

inline const char* errc_name(errc e) noexcept {
  switch (e) {
    case errc::shape:
      return "shape_error";
    case errc::index:
      return "index_error";
    case errc::value:
      return "value_error";
    case errc::parse:
      return "parse_error";
    case errc::io:
      return "io_error";
    case errc::unsupported:
      return "unsupported_error";
  }
  return "error";
}

/// Base of every exception the library throws; code() tells the kind.
class error : public std::runtime_error {
 public:
  error(errc code, const std::string& what) : std::runtime_error(what), code_(code) {}
  errc code() const noexcept { return code_; }

 private:
  errc code_;
};

class shape_error : public error {
 public:
  explicit shape_error(const std::string& w) : error(errc::shape, w) {}

 protected:
  shape_error(errc code, const std::string& w) : error(code, w) {}
};
/// An index or slice bound outside its extent. It is a kind of shape_error, so code that
/// catches shape_error for every bad index/view/reshape sees it too.
class index_error : public shape_error {
 public:
  explicit index_error(const std::string& w) : shape_error(errc::index, w) {}
};
class value_error : public error {
 public:
  explicit value_error(const std::string& w) : error(errc::value, w) {}
};
class parse_error : public error {
 public:
  explicit parse_error(const std::string& w) : error(errc::parse, w) {}
};
class io_error : public error {
 public:
  explicit io_error(const std::string& w) : error(errc::io, w) {}
};
class unsupported_error : public error {
 public:
  explicit unsupported_error(const std::string& w) : error(errc::unsupported, w) {}
};

/// Handler for TFM_NO_EXCEPTIONS builds. Must not return.
using error_handler = void (*)(errc code, const char* message);

namespace detail {
inline std::atomic<error_handler>& error_handler_slot() noexcept {
  static std::atomic<error_handler> slot{nullptr};
  return slot;
}
}  // namespace detail

/// Installs the handler used by TFM_NO_EXCEPTIONS builds; returns the previous one.
/// (In builds with exceptions the handler is ignored: errors throw.)
inline error_handler set_error_handler(error_handler h) noexcept {
  return detail::error_handler_slot().exchange(h);
}

/// Reports an error of kind `code` with a full-sentence message. Never returns.
[[noreturn]] inline void raise(errc code, const std::string& message) {
#if !TFM_NO_EXCEPTIONS
  switch (code) {
    case errc::shape:
      throw shape_error(message);
    case errc::index:
      throw index_error(message);
    case errc::value:
      throw value_error(message);
    case errc::parse:
      throw parse_error(message);
    case errc::io:
      throw io_error(message);
    case errc::unsupported:
      throw unsupported_error(message);
  }
  throw error(code, message);
#else
  if (error_handler h = detail::error_handler_slot().load()) h(code, message.c_str());
  std::fprintf(stderr, "typeformer %s: %s\n", errc_name(code), message.c_str());
  std::abort();
#endif
}

/// Builds a message from pieces: strings, string_views, characters and integers.
namespace detail {
inline void append_piece(std::string& s, std::string_view v) { s.append(v); }
inline void append_piece(std::string& s, const char* v) { s.append(v); }
inline void append_piece(std::string& s, const std::string& v) { s.append(v); }
inline void append_piece(std::string& s, char c) { s.push_back(c); }
template <class I>
requires(std::is_integral_v<I> && !std::is_same_v<I, char> &&
         !std::is_same_v<I, bool>) inline void append_piece(std::string& s, I v) {
  s.append(std::to_string(v));
}
inline void append_piece(std::string& s, bool b) { s.append(b ? "true" : "false"); }
inline void append_piece(std::string& s, double v) { s.append(std::to_string(v)); }
}  // namespace detail

template <class... Pieces>
std::string message(const Pieces&... pieces) {
  std::string s;
  (detail::append_piece(s, pieces), ...);
  return s;
}

/// raise(code, message(pieces...)) in one call.
template <class... Pieces>
[[noreturn]] void fail(errc code, const Pieces&... pieces) {
  raise(code, message(pieces...));
}

TFM_END_NAMESPACE
