// typeformer/train/progress.hpp
//
// A live progress line for training loops:
//
//   train::progress_line bar(total_steps);              // stdout; tty detected
//   bar.update({.step = s, .loss = l, .tokens_per_s = r, .eta_s = e});
//   bar.print("step 100: val loss 2.31");               // a whole line (clears the live one)
//   bar.finish();
//
// On a terminal the line is rewritten in place ("\r" and erase-to-end-of-line); otherwise (a
// pipe, a file, CI logs) every `plain_every`-th update and the last one are printed as ordinary
// lines, so logs stay readable. train::throughput measures tokens per second (exponential
// moving average over steps) and the time left.
#pragma once

#include "typeformer/config/config.hpp"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

TFM_BEGIN_NAMESPACE
namespace train {

/// "42.0s", "3m05s", "2h07m" (negative or non-finite: "?").
inline std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  char b[32];
  if (s < 60) {
    std::snprintf(b, sizeof b, "%.1fs", s);
  } else if (s < 3600) {
    const long t = std::lround(s);
    std::snprintf(b, sizeof b, "%ldm%02lds", t / 60, t % 60);
  } else {
    const long t = std::lround(s / 60);
    std::snprintf(b, sizeof b, "%ldh%02ldm", t / 60, t % 60);
  }
  return b;
}

/// A count with an SI suffix and three significant digits: 950, 1.23k, 45.6M, 7.89G, 1.20T.
inline std::string format_si(double x) {
  if (!std::isfinite(x)) return "?";
  const char* suffix[] = {"", "k", "M", "G", "T", "P"};
  int i = 0;
  double a = std::fabs(x);
  while (a >= 999.5 && i < 5) {
    a /= 1000;
    x /= 1000;
    ++i;
  }
  char b[32];
  if (i == 0)
    std::snprintf(b, sizeof b, "%.0f", x);
  else
    std::snprintf(b, sizeof b,
                  a >= 99.95   ? "%.0f%s"
                  : a >= 9.995 ? "%.1f%s"
                               : "%.2f%s",
                  x, suffix[i]);
  return b;
}

/// Tokens per second as an exponential moving average of per-step rates (the first step, which
/// pays for warm-up, gets replaced quickly), and the time left at that pace.
class throughput {
 public:
  explicit throughput(double smoothing = 0.1) : alpha_(smoothing) {}
  /// Records one step of `tokens` tokens that took `seconds`.
  void add(double tokens, double seconds) {
    if (!(seconds > 0)) return;
    const double step = seconds;
    step_s_ = n_ == 0  ? step
              : n_ < 3 ? 0.5 * (step_s_ + step)
                       : (1 - alpha_) * step_s_ + alpha_ * step;
    tok_ = tokens;
    ++n_;
  }
  /// Smoothed tokens per second (0 before the first step).
  double tokens_per_s() const noexcept { return n_ && step_s_ > 0 ? tok_ / step_s_ : 0.0; }
  /// Seconds for `steps_left` more steps at the smoothed pace (NaN before the first step).
  double eta(std::int64_t steps_left) const noexcept {
    return n_ ? static_cast<double>(steps_left) * step_s_ : std::nan("");
  }

 private:
  double alpha_;
  double step_s_ = 0, tok_ = 0;
  std::int64_t n_ = 0;
};

/// What one progress update shows.
struct progress_info {
  std::int64_t step = 0;       // steps done
  double loss = std::nan("");  // latest training loss
  double lr = std::nan("");    // learning rate of the latest step
  double tokens_per_s = 0;
  double eta_s = std::nan("");
};

/// Whether `f` is a terminal.
inline bool is_terminal(std::FILE* f) noexcept {
#if defined(__unix__) || defined(__APPLE__)
  return f && ::isatty(::fileno(f)) != 0;
#else
  (void)f;
  return false;
#endif
}

class progress_line {
 public:
  /// total: the last step number; plain_every: in non-terminal mode, print every n-th step.
  explicit progress_line(std::int64_t total, std::FILE* out = stdout, std::int64_t plain_every = 10)
      : total_(total),
        out_(out),
        tty_(is_terminal(out)),
        every_(plain_every < 1 ? 1 : plain_every) {}

  bool interactive() const noexcept { return tty_; }
  /// Forces terminal (true) or plain-line (false) mode.
  void set_interactive(bool on) noexcept { tty_ = on; }

  /// The text of one update, without line control: "step  120/1000 [###...] loss 2.3456 ...".
  std::string format(const progress_info& p) const {
    char head[96];
    const int w = static_cast<int>(std::to_string(total_).size());
    std::snprintf(head, sizeof head, "step %*lld/%lld", w, static_cast<long long>(p.step),
                  static_cast<long long>(total_));
    std::string s = head;
    if (tty_ && total_ > 0) {
      const int cells = 20;
      const double frac = static_cast<double>(p.step) / static_cast<double>(total_);
      const int full = static_cast<int>(std::floor(frac * cells + 1e-9));
      s += " [";
      for (int i = 0; i < cells; ++i) s += i < full ? '#' : '.';
      s += ']';
    }
    char b[64];
    if (std::isfinite(p.loss)) {
      std::snprintf(b, sizeof b, " | loss %.4f", p.loss);
      s += b;
    }
    if (std::isfinite(p.lr)) {
      std::snprintf(b, sizeof b, " | lr %.2e", p.lr);
      s += b;
    }
    if (p.tokens_per_s > 0) s += " | " + format_si(p.tokens_per_s) + " tok/s";
    if (std::isfinite(p.eta_s)) s += " | ETA " + format_duration(p.eta_s);
    return s;
  }

  /// Shows `p`: rewrites the live line on a terminal, prints a line every plain_every steps
  /// (and at the last step) otherwise.
  void update(const progress_info& p) {
    if (tty_) {
      std::fprintf(out_, "\r%s\x1b[K", format(p).c_str());
      live_ = true;
    } else if (p.step % every_ == 0 || p.step == total_) {
      std::fprintf(out_, "%s\n", format(p).c_str());
    }
    std::fflush(out_);
  }

  /// Prints a whole line. On a terminal it replaces the live line, which the next update()
  /// draws again below it.
  void print(std::string_view line) {
    if (live_) std::fputs("\r\x1b[K", out_);
    live_ = false;
    std::fprintf(out_, "%.*s\n", static_cast<int>(line.size()), line.data());
    std::fflush(out_);
  }

  /// Ends the live line, leaving its last state on screen (call at the end).
  void finish() {
    end_live();
    std::fflush(out_);
  }

 private:
  void end_live() {
    if (live_) std::fputc('\n', out_);
    live_ = false;
  }
  std::int64_t total_;
  std::FILE* out_;
  bool tty_;
  std::int64_t every_;
  bool live_ = false;
};

}  // namespace train
TFM_END_NAMESPACE
