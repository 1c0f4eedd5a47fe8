// typeformer/nn/lora_target.hpp
//
// The projections of a llama-style block a LoRA adapter can target, their short names and the
// parser of user-given names. A light header on its own, so that the adapter files
// (io/lora_adapter.hpp) and the adapters themselves (nn/lora.hpp) share one enum.
#pragma once

#include "typeformer/config/error.hpp"

#include <array>
#include <string>
#include <string_view>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace nn {

/// The projections of a llama-style block an adapter can target.
enum class lora_target { q, k, v, o, gate, up, down };

inline constexpr std::array<lora_target, 7> all_lora_targets{
    lora_target::q,    lora_target::k,  lora_target::v,   lora_target::o,
    lora_target::gate, lora_target::up, lora_target::down};

inline const char* to_string(lora_target t) {
  switch (t) {
    case lora_target::q:
      return "q";
    case lora_target::k:
      return "k";
    case lora_target::v:
      return "v";
    case lora_target::o:
      return "o";
    case lora_target::gate:
      return "gate";
    case lora_target::up:
      return "up";
    case lora_target::down:
      return "down";
  }
  return "?";
}

/// Targets from names: q, k, v, o, gate, up, down, their PEFT spellings (q_proj, ...,
/// down_proj), or "all-linear". Unknown names raise tfm::value_error listing the valid ones.
inline std::vector<lora_target> parse_lora_targets(const std::vector<std::string>& names) {
  std::vector<lora_target> out;
  auto add = [&](lora_target t) {
    for (auto o : out)
      if (o == t) return;
    out.push_back(t);
  };
  for (const auto& n : names) {
    if (n == "all-linear" || n == "all_linear") {
      for (auto t : all_lora_targets) add(t);
      continue;
    }
    std::string_view s = n;
    if (s.size() > 5 && s.substr(s.size() - 5) == "_proj") s.remove_suffix(5);
    bool found = false;
    for (auto t : all_lora_targets)
      if (s == to_string(t)) {
        add(t);
        found = true;
      }
    if (!found)
      fail(errc::value, "tfm::nn::lora: unknown target module '", n,
           "'; use q, k, v, o, gate, up, down (or q_proj ... down_proj, or all-linear).");
  }
  if (out.empty()) fail(errc::value, "tfm::nn::lora: no target modules were given.");
  return out;
}

}  // namespace nn
TFM_END_NAMESPACE
