// Crash safety: a child process trains and checkpoints after every step; the parent kills it
// with SIGKILL mid-run (often mid-save), loads the last complete checkpoint, resumes, and gets
// the uninterrupted run's loss curve bit for bit. The child runs single-threaded, so it never
// needs an OpenMP thread pool inherited through fork().
#include "train_fixture.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <thread>

#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace tfm;
using namespace tfm_train_test;

namespace {
/// Forks a child that trains o.total steps, checkpointing to `path` after every step; kills it
/// with SIGKILL `extra_ms` after a checkpoint at step >= `at` appears. Returns the step seen.
std::int64_t train_and_kill(const run_options& o, const train::token_dataset& data,
                            const std::string& path, std::int64_t at, int extra_ms, bool& killed) {
  std::fflush(nullptr);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    try {
      session<float> s(o);
      s.train_to(o, data, o.total, path);
    } catch (...) {
      ::_exit(3);
    }
    ::_exit(0);
  }
  std::int64_t seen = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (seen < at && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    try {
      seen = train::read_training_state(path).step;
    } catch (const tfm::error&) {
      // not written yet
    }
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(extra_ms));
  ::kill(child, SIGKILL);
  int status = 0;
  ::waitpid(child, &status, 0);
  killed = WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
  return seen;
}
}  // namespace

TEST_CASE("kill -9 during training: the last checkpoint loads and resuming reproduces the curve") {
  thread_scope ts(1);
  run_options o;
  o.total = 120;
  o.dropout = 0.1;
  const auto data = micro_corpus();
  session<float> full(o);
  full.train_to(o, data, o.total);

  const std::string path = temp_path("kill.tfm");
  // Three kills at different moments: right after a save was seen, and a few ms later (often
  // inside the next save, leaving a partial temp file).
  for (int extra_ms : {0, 3, 7}) {
    std::remove(path.c_str());
    std::remove((path + ".tmp").c_str());
    bool killed = false;
    const std::int64_t seen = train_and_kill(o, data, path, 5, extra_ms, killed);
    MESSAGE("kill ", extra_ms, " ms after seeing step ", seen, ": killed by SIGKILL ", killed,
            ", temp file left ", std::filesystem::exists(path + ".tmp"));
    REQUIRE(seen >= 5);
    CHECK(killed);

    // The last complete checkpoint loads in a fresh session and the run continues.
    session<float> resumed(o);
    REQUIRE_NOTHROW(resumed.load(path));
    const std::int64_t k = resumed.st.step;
    MESSAGE("resuming at step ", k, " of ", o.total);
    CHECK(k >= seen);
    CHECK(k < o.total);
    resumed.train_to(o, data, o.total);
    CHECK(same_curve(full.st.curve, resumed.st.curve));
    CHECK(same_parameters(full.ps, resumed.ps));
  }
  std::remove(path.c_str());
  std::remove((path + ".tmp").c_str());
}
