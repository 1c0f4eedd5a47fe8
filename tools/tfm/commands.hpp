// tools/tfm/commands.hpp: the table of tfm's subcommands (one cmd_<name>.cpp each).
#pragma once

#include "cli.hpp"

#include <span>
#include <string>
#include <vector>

namespace tfm_cli {

int run_inspect(const std::vector<std::string>& args);

inline std::span<const cli::command> commands() {
  static const cli::command table[] = {
      {"inspect", "metadata and tensor table of a GGUF or safetensors file", &run_inspect},
  };
  return table;
}

}  // namespace tfm_cli
