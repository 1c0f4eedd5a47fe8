// static.no_exceptions: every public CPU header compiles with -fno-exceptions, and in such a build
// tfm::fail() reports through the handler installed with tfm::set_error_handler() (or, with no
// handler or one that returns, prints the message to stderr and aborts), as config/error.hpp says.
// Each scenario runs in a child process so that exits and aborts can be observed.
#include "all_headers.hpp"  // generated: every header under include/typeformer/ except CUDA

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "typeformer/config/error.hpp"

static_assert(TFM_NO_EXCEPTIONS == 1, "-fno-exceptions must switch TFM_NO_EXCEPTIONS on by itself");

namespace {

constexpr const char* expected_message = "gguf: tensor count 9 exceeds the limit 4";

// Exits 42 when called with the expected error, 43 otherwise; never returns.
void exiting_handler(tfm::errc code, const char* message) {
  const bool ok = code == tfm::errc::parse && std::strcmp(message, expected_message) == 0;
  std::_Exit(ok ? 42 : 43);
}

// Breaks the contract (returns): raise() must then print and abort anyway.
void returning_handler(tfm::errc, const char*) {}

struct outcome {
  int status = 0;
  std::string stderr_text;
};

// Runs body() in a child process with stderr captured.
outcome run_child(void (*body)()) {
  int fds[2];
  if (pipe(fds) != 0) std::abort();
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid < 0) std::abort();
  if (pid == 0) {
    close(fds[0]);
    dup2(fds[1], 2);
    body();
    std::_Exit(0);  // fail() returned: must not happen
  }
  close(fds[1]);
  outcome out;
  char buf[512];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) out.stderr_text.append(buf, n);
  close(fds[0]);
  waitpid(pid, &out.status, 0);
  return out;
}

void fail_parse() {
  tfm::fail(tfm::errc::parse, "gguf: tensor count ", 9, " exceeds the limit ", 4);
}

int failures = 0;
void check(bool ok, const char* what) {
  std::printf("%s: %s\n", ok ? "PASS" : "FAIL", what);
  if (!ok) ++failures;
}

}  // namespace

int main() {
  {
    const outcome r = run_child([] {
      tfm::set_error_handler(exiting_handler);
      fail_parse();
    });
    check(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 42,
          "the installed handler receives errc::parse and the full message");
  }
  {
    const outcome r = run_child([] {
      tfm::set_error_handler(returning_handler);
      fail_parse();
    });
    check(WIFSIGNALED(r.status) && WTERMSIG(r.status) == SIGABRT,
          "a handler that returns is followed by abort()");
    check(r.stderr_text == std::string("typeformer parse_error: ") + expected_message + "\n",
          "a handler that returns is followed by the message on stderr");
  }
  {
    const outcome r = run_child([] { fail_parse(); });
    check(WIFSIGNALED(r.status) && WTERMSIG(r.status) == SIGABRT, "no handler: abort()");
    check(r.stderr_text.find(expected_message) != std::string::npos,
          "no handler: the message is on stderr");
  }
  {
    check(tfm::set_error_handler(exiting_handler) == nullptr, "no handler is installed at start");
    check(tfm::set_error_handler(nullptr) == exiting_handler,
          "set_error_handler returns the previous handler");
  }
  std::printf("%d failed\n", failures);
  return failures == 0 ? 0 : 1;
}
