// typeformer/optim/grad_scaler.hpp
//
// Dynamic loss scaling for f16 training (Micikevicius et al., arXiv:1710.03740; the policy of
// PyTorch's GradScaler): multiply the loss by `scale` before backward so small gradients do not
// flush to zero, then divide the gradients by it before the optimizer step.
//   - If any gradient is NaN/Inf after unscaling: skip the step and halve the scale (backoff).
//   - After `growth_interval` consecutive clean steps: double the scale (growth).
//
//   optim::grad_scaler sc;
//   auto loss = model.loss(x, y);
//   sc.scale(loss).backward();          // backward of loss * scale
//   if (sc.unscale(opt.parameters())) opt.step();   // false: overflow, step skipped
//   sc.update();
#pragma once

#include "typeformer/autodiff/variable.hpp"
#include "typeformer/nn/module.hpp"
#include "typeformer/ops/elementwise.hpp"

#include <cmath>
#include <cstdint>

TFM_BEGIN_NAMESPACE
namespace optim {

class grad_scaler {
 public:
  explicit grad_scaler(double init_scale = 65536.0, double growth = 2.0, double backoff = 0.5,
                       std::int64_t growth_interval = 2000)
      : scale_(init_scale), growth_(growth), backoff_(backoff), interval_(growth_interval) {
    if (!(init_scale > 0) || !(growth > 1) || !(backoff > 0 && backoff < 1) || growth_interval < 1)
      fail(errc::value,
           "tfm::optim::grad_scaler: need scale > 0, growth > 1, 0 < backoff < 1, "
           "growth_interval >= 1.");
  }

  double scale_value() const noexcept { return scale_; }
  bool found_inf() const noexcept { return found_inf_; }
  std::int64_t clean_steps() const noexcept { return clean_; }

  /// loss * scale (recorded, so backward yields scaled gradients).
  template <class T, class S>
  var<T, S> scale(const var<T, S>& loss) const {
    return var<T, S>((loss * scale_).data());
  }

  /// Divides every gradient by the scale; returns false if any is not finite (found_inf()).
  template <class T>
  bool unscale(const nn::parameter_list<T>& ps) {
    found_inf_ = false;
    const double inv = 1.0 / scale_;
    for (const auto& p : ps) {
      if (!p.data->has_grad()) continue;
      auto* g = p.data->grad_data();
      for (index_t k = 0; k < p.data->size(); ++k) {
        double v = static_cast<double>(g[k]) * inv;
        if (!std::isfinite(v)) found_inf_ = true;
        g[k] = static_cast<grad_t<T>>(v);
      }
    }
    return !found_inf_;
  }

  /// Adjusts the scale after a step attempt (call once per step, after unscale()).
  void update() {
    if (found_inf_) {
      scale_ *= backoff_;
      clean_ = 0;
    } else if (++clean_ >= interval_) {
      scale_ *= growth_;
      clean_ = 0;
    }
  }

 private:
  double scale_, growth_, backoff_;
  std::int64_t interval_;
  std::int64_t clean_ = 0;
  bool found_inf_ = false;
};

}  // namespace optim
TFM_END_NAMESPACE
