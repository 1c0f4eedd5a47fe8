// tfm: typeformer's command-line tool. `tfm <subcommand> [options]`; `tfm <subcommand> --help`
// lists each subcommand's options. Subcommands live in cmd_<name>.cpp, one translation unit each,
// and are thin layers over library calls (docs/models.md, "The tfm command").
//
// Exit status: 0 ok, 1 error (one line on stderr), 2 bad usage.
#include "cli.hpp"
#include "commands.hpp"

#include "typeformer/config/error.hpp"
#include "typeformer/config/version.hpp"

#include <cstdio>
#include <exception>
#include <new>
#include <string>
#include <vector>

namespace {

int print_overview() {
  std::FILE* to = stdout;
  std::fprintf(to,
               "tfm %s: typeformer's command-line tool\n\nusage: tfm <subcommand> [options]\n\n",
               TFM_VERSION_STRING);
  for (const cli::command& c : tfm_cli::commands())
    std::fprintf(to, "  %-12s %s\n", c.name, c.summary);
  std::fprintf(to, "\n'tfm <subcommand> --help' shows the options of each.\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::string names;
    for (const cli::command& c : tfm_cli::commands())
      names += (names.empty() ? "" : ", ") + std::string(c.name);
    std::fprintf(stderr, "tfm: missing subcommand, one of %s (see 'tfm --help')\n", names.c_str());
    return 2;
  }
  const std::string sub = argv[1];
  if (sub == "-h" || sub == "--help" || sub == "help") return print_overview();
  if (sub == "--version") {
    std::printf("tfm %s\n", TFM_VERSION_STRING);
    return 0;
  }
  const cli::command* cmd = nullptr;
  for (const cli::command& c : tfm_cli::commands())
    if (sub == c.name) cmd = &c;
  if (cmd == nullptr) {
    std::fprintf(stderr, "tfm: unknown subcommand '%s' (see 'tfm --help')\n", sub.c_str());
    return 2;
  }
  const std::vector<std::string> args(argv + 2, argv + argc);
  try {
    return cmd->run(args);
  } catch (const cli::help_shown&) {
    return 0;
  } catch (const cli::usage_error& e) {
    std::fprintf(stderr, "tfm %s: %s (see 'tfm %s --help')\n", cmd->name, e.what(), cmd->name);
    return 2;
  } catch (const tfm::error& e) {
    std::fprintf(stderr, "tfm %s: %s\n", cmd->name, e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "tfm %s: out of memory\n", cmd->name);
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tfm %s: %s\n", cmd->name, e.what());
    return 1;
  }
}
