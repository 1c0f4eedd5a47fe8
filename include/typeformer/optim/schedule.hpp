// typeformer/optim/schedule.hpp
//
// Learning-rate schedules: lr(step) for step = 0, 1, ... (the step about to be taken).
//   constant                      lr
//   warmup_cosine                 linear warmup from 0 to lr over `warmup` steps, then cosine
//                                 decay to min_lr at `total` steps, min_lr afterwards
//                                 (Loshchilov & Hutter, arXiv:1608.03983; GPT-2/nanoGPT practice)
//   warmup_stable_decay (WSD)     warmup, constant lr, then linear decay to min_lr over the last
//                                 `decay` steps before `total` (Hu et al., MiniCPM,
//                                 arXiv:2404.06395)
// Warmup uses (step + 1) / warmup so the first step has a non-zero rate (nanoGPT's choice).
#pragma once

#include "typeformer/config/error.hpp"

#include <cmath>
#include <cstdint>

TFM_BEGIN_NAMESPACE
namespace optim {

struct lr_schedule {
  enum class kind { constant, warmup_cosine, warmup_stable_decay };
  kind k = kind::constant;
  double lr = 1e-3;
  double min_lr = 0.0;
  std::int64_t warmup = 0;
  std::int64_t total = 0;
  std::int64_t decay = 0;  // WSD: length of the final decay phase

  static lr_schedule constant(double lr) {
    check(lr, lr, 0, 0);
    return {kind::constant, lr, lr, 0, 0, 0};
  }
  static lr_schedule warmup_cosine(double lr, double min_lr, std::int64_t warmup,
                                   std::int64_t total) {
    check(lr, min_lr, warmup, total);
    return {kind::warmup_cosine, lr, min_lr, warmup, total, 0};
  }
  static lr_schedule warmup_stable_decay(double lr, double min_lr, std::int64_t warmup,
                                         std::int64_t total, std::int64_t decay) {
    check(lr, min_lr, warmup, total);
    if (decay < 0 || warmup + decay > total)
      fail(errc::value, "tfm::optim::lr_schedule: warmup (", warmup, ") + decay (", decay,
           ") must fit in total (", total, ").");
    return {kind::warmup_stable_decay, lr, min_lr, warmup, total, decay};
  }

  /// The learning rate for `step`.
  double operator()(std::int64_t step) const {
    if (k == kind::constant) return lr;
    if (step < warmup) return lr * static_cast<double>(step + 1) / static_cast<double>(warmup);
    if (step >= total) return min_lr;
    if (k == kind::warmup_cosine) {
      double p = static_cast<double>(step - warmup) / static_cast<double>(total - warmup);
      return min_lr + 0.5 * (lr - min_lr) * (1.0 + std::cos(3.14159265358979323846 * p));
    }
    std::int64_t start = total - decay;
    if (step < start) return lr;
    double p = static_cast<double>(step - start) / static_cast<double>(decay);
    return lr + (min_lr - lr) * p;
  }

 private:
  static void check(double lr, double min_lr, std::int64_t warmup, std::int64_t total) {
    if (!(lr >= 0) || !(min_lr >= 0) || min_lr > lr)
      fail(errc::value, "tfm::optim::lr_schedule: need 0 <= min_lr <= lr.");
    if (warmup < 0 || total < warmup)
      fail(errc::value, "tfm::optim::lr_schedule: need 0 <= warmup <= total.");
  }
};

}  // namespace optim
TFM_END_NAMESPACE
