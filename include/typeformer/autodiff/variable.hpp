// typeformer/autodiff/variable.hpp
//
// WHAT THIS REPRESENTS
//   Reverse-mode automatic differentiation over tensors.
//
//   tfm::var<T, Shape>: a tensor value that may take part in a recorded computation. Its static
//   shape lives in its type (so ops on vars check shapes at compile time like tensors do); inside,
//   vars share a type-erased record (detail::var_data<T>: the value, the gradient, the op that
//   produced it), so the graph machinery is compiled once per element type, not once per shape.
//
//   Recording: an op whose inputs require gradients, run while grad mode is on, attaches a node
//   (detail::node) to its output: the op's name, its inputs, and a closure that maps the
//   output's gradient to the inputs' gradients (the vjp). Nodes form a DAG that the outputs own;
//   backward(loss) visits it in reverse topological order, accumulates gradients into every var
//   that requires them, and then frees the nodes and everything they saved (unless asked to
//   retain them). Gradients accumulate across backward calls until zero_grad().
//
//   tfm::no_grad guard;      records nothing in this scope (thread-local)
//   tfm::parameter(t)        a var that requires gradients (a leaf)
//   v.detach()               same value, cut from the graph
//   loss.item()              the value of a one-element var as a T (static_cast<T>(loss) too)
//   tfm::anomaly_mode on;    checks every op's output and gradients for NaN/Inf and reports the
//                            first op that produced one, by name (forward or backward)
//
// GRADIENT TYPES
//   Gradients of bf16/f16 vars are held in float (grad_t<T>), so accumulation is f32 as mixed
//   precision training requires; f32 and f64 vars have gradients of their own type.
#pragma once

#include "typeformer/autodiff/registry.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/core/dtype.hpp"
#include "typeformer/core/shape.hpp"
#include "typeformer/core/storage.hpp"
#include "typeformer/core/tensor.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <vector>

TFM_BEGIN_NAMESPACE

/// Type gradients of T-valued vars are held in.
template <class T>
using grad_t = std::conditional_t<is_half_v<T>, float, T>;

// ---- grad mode -------------------------------------------------------------------------------

namespace detail {
inline bool& grad_enabled_flag() noexcept {
  thread_local bool enabled = true;
  return enabled;
}
inline bool& anomaly_flag() noexcept {
  thread_local bool on = false;
  return on;
}
}  // namespace detail

/// True when ops record the graph on this thread.
inline bool grad_enabled() noexcept { return detail::grad_enabled_flag(); }

/// RAII: no recording in this scope (like torch.no_grad()).
class no_grad {
 public:
  no_grad() noexcept : saved_(detail::grad_enabled_flag()) { detail::grad_enabled_flag() = false; }
  ~no_grad() { detail::grad_enabled_flag() = saved_; }
  no_grad(const no_grad&) = delete;
  no_grad& operator=(const no_grad&) = delete;

 private:
  bool saved_;
};

/// RAII: recording on in this scope (inside a no_grad region, e.g. for recomputation).
class enable_grad {
 public:
  enable_grad() noexcept : saved_(detail::grad_enabled_flag()) {
    detail::grad_enabled_flag() = true;
  }
  ~enable_grad() { detail::grad_enabled_flag() = saved_; }
  enable_grad(const enable_grad&) = delete;
  enable_grad& operator=(const enable_grad&) = delete;

 private:
  bool saved_;
};

/// RAII: anomaly detection on in this scope.
class anomaly_mode {
 public:
  anomaly_mode() noexcept : saved_(detail::anomaly_flag()) { detail::anomaly_flag() = true; }
  ~anomaly_mode() { detail::anomaly_flag() = saved_; }
  anomaly_mode(const anomaly_mode&) = delete;
  anomaly_mode& operator=(const anomaly_mode&) = delete;
  static bool enabled() noexcept { return detail::anomaly_flag(); }

 private:
  bool saved_;
};

namespace detail {

struct node;

/// True when none of g[0, n) is infinite or NaN (gradients before a step; forward values in
/// anomaly mode). float and double test the exponent bits with an OR over blocks of 4096, a loop
/// the compiler vectorises (the scalar isfinite loop with an early exit cost ~3% of a training
/// step), and stop after the first block that holds a bad value.
template <class G>
bool all_finite(const G* g, index_t n) noexcept {
  if constexpr (std::is_same_v<G, float> || std::is_same_v<G, double>) {
    using U = std::conditional_t<sizeof(G) == 4, std::uint32_t, std::uint64_t>;
    constexpr U exponent = sizeof(G) == 4 ? U(0x7f800000u) : U(0x7ff0000000000000ull);
    constexpr index_t block = 4096;
    for (index_t i0 = 0; i0 < n; i0 += block) {
      const index_t i1 = std::min(n, i0 + block);
      U bad = 0;
      for (index_t i = i0; i < i1; ++i) {
        U u;
        std::memcpy(&u, g + i, sizeof u);
        bad |= static_cast<U>((u & exponent) == exponent);
      }
      if (bad != 0) return false;
    }
    return true;
  } else {
    for (index_t i = 0; i < n; ++i)
      if (!std::isfinite(static_cast<double>(compute_t<G>(g[i])))) return false;
    return true;
  }
}

/// The type-erased part of a variable that graph traversal needs.
struct var_base {
  std::vector<index_t> extents;
  bool requires_grad = false;
  std::shared_ptr<node> creator;  // the op that produced this var (null for leaves)
  std::string name;               // optional, for reports
  bool graph_freed = false;       // its creator was freed by a backward without retain_graph
  virtual ~var_base() = default;
  virtual void release_grad() noexcept = 0;
  virtual bool grad_finite() const noexcept = 0;
  virtual bool has_grad() const noexcept = 0;
  index_t size() const noexcept {
    index_t n = 1;
    for (index_t e : extents) n *= e;
    return n;
  }
};

/// A variable's value and gradient (contiguous, row-major).
template <class T>
struct var_data final : var_base {
  using G = grad_t<T>;
  aligned_buffer<T> value;
  aligned_buffer<G> grad;  // empty until a gradient arrives

  /// The gradient buffer, zero-filled on first use.
  G* grad_data() {
    if (grad.size() != size()) grad = aligned_buffer<G>(size(), true);
    return grad.data();
  }
  /// Where a vjp that writes every element of this gradient puts its contribution. If a
  /// gradient has arrived already, `accumulate` is true and the vjp adds to `data`. Otherwise
  /// the buffer is allocated without the zero fill and `accumulate` is false: the vjp must assign
  /// every element (a GEMM with beta = 0), which spares the fill and the read of the zeros.
  /// Builds without NDEBUG fill the new buffer with NaN, so an element a vjp fails to write
  /// shows up in the gradient tests.
  struct grad_target {
    G* data;
    bool accumulate;
    /// The GEMM beta that adds to or overwrites `data` accordingly.
    G beta() const noexcept { return accumulate ? G(1) : G(0); }
  };
  grad_target grad_for_overwrite() {
    if (grad.size() == size()) return {grad.data(), true};
    grad = aligned_buffer<G>(size(), false);
#if !defined(NDEBUG)
    std::fill(grad.data(), grad.data() + grad.size(), std::numeric_limits<G>::quiet_NaN());
#endif
    return {grad.data(), false};
  }
  void release_grad() noexcept override { grad = aligned_buffer<G>(); }
  bool has_grad() const noexcept override { return grad.size() == size() && size() > 0; }
  bool grad_finite() const noexcept override { return all_finite(grad.data(), grad.size()); }
};

template <class T>
using var_ptr = std::shared_ptr<var_data<T>>;

/// A recorded op: its inputs and the closure that propagates the output gradient to them.
struct node {
  const char* op_name = "?";
  std::vector<std::shared_ptr<var_base>> inputs;
  var_base* output = nullptr;  // the node is owned by its output, so this never dangles
  std::function<void()> backward;
};

template <class T>
var_ptr<T> make_var_data(std::vector<index_t> extents, bool zero = false) {
  auto d = std::make_shared<var_data<T>>();
  d->extents = std::move(extents);
  d->value = aligned_buffer<T>(d->size(), zero);
  return d;
}

inline bool any_requires_grad(std::initializer_list<const var_base*> vs) {
  for (const var_base* v : vs)
    if (v && v->requires_grad) return true;
  return false;
}

/// Attaches a node to `out` if grad mode is on and some input requires gradients. `fn` is the
/// vjp; it runs once during backward and may read out->grad_data().
template <class T, class Fn>
void record(const var_ptr<T>& out, const char* op_name,
            std::vector<std::shared_ptr<var_base>> inputs, Fn&& fn) {
  if (anomaly_mode::enabled() && !all_finite(out->value.data(), out->size()))
    fail(errc::value, "tfm anomaly: the forward pass of op '", op_name,
         "' produced a NaN or Inf value.");
#if defined(TFM_CHECK_OP_REGISTRY) && TFM_CHECK_OP_REGISTRY
  if (!is_differentiable_op(op_name))
    fail(
        errc::unsupported, "tfm autodiff: op '", op_name,
        "' records a node but is not listed in autodiff/registry.hpp (add it with its gradcheck).");
#endif
  if (!grad_enabled()) return;
  bool need = false;
  for (auto& in : inputs) need = need || (in && in->requires_grad);
  if (!need) return;
  auto n = std::make_shared<node>();
  n->op_name = op_name;
  n->inputs = std::move(inputs);
  n->output = out.get();
  n->backward = std::forward<Fn>(fn);
  out->requires_grad = true;
  out->creator = std::move(n);
}

}  // namespace detail

/// Options of backward().
struct backward_options {
  bool retain_graph = false;  ///< keep the nodes (and their saved tensors) for another backward
};

/// Runs reverse-mode differentiation from `root`, whose gradient is seeded with ones (a scalar
/// loss gets d loss/d loss = 1). Gradients accumulate into every var that requires them.
template <class T>
void backward_seeded(const detail::var_ptr<T>& root, backward_options opt = {});

template <class T>
void backward_from(const detail::var_ptr<T>& root, backward_options opt = {}) {
  if (!root->requires_grad)
    fail(errc::value,
         "tfm::backward: the output does not require gradients (no input that "
         "requires gradients took part, or it was computed under no_grad).");
  auto* g = root->grad_data();
  for (index_t i = 0; i < root->size(); ++i) g[i] += grad_t<T>(1);
  backward_seeded(root, opt);
}

/// Backpropagates the gradient already held by `root` (used by checkpoint and by callers that
/// seed a non-scalar output with their own gradient).
template <class T>
void backward_seeded(const detail::var_ptr<T>& root, backward_options opt) {
  using namespace detail;
  // Reverse topological order by iterative DFS over creators.
  std::vector<node*> order;
  std::unordered_set<node*> seen;
  std::vector<std::pair<node*, std::size_t>> stack;
  auto check_not_freed = [](const var_base* v) {
    if (v->graph_freed && !v->creator)
      fail(errc::value,
           "tfm::backward: this graph was already freed by an earlier backward(); "
           "pass backward_options{.retain_graph = true} to the first call to "
           "backpropagate through it twice.");
  };
  check_not_freed(root.get());
  const bool root_has_creator = root->creator != nullptr;
  if (root->creator) {
    stack.push_back({root->creator.get(), 0});
    seen.insert(root->creator.get());
  }
  while (!stack.empty()) {
    auto& [n, i] = stack.back();
    if (i < n->inputs.size()) {
      var_base* in = n->inputs[i++].get();
      if (in) check_not_freed(in);
      if (in && in->creator && !seen.count(in->creator.get())) {
        seen.insert(in->creator.get());
        stack.push_back({in->creator.get(), 0});
      }
    } else {
      order.push_back(n);
      stack.pop_back();
    }
  }
  // `order` lists producers before consumers; walk it backwards.
  for (std::size_t k = order.size(); k-- > 0;) {
    node* n = order[k];
    if (!n->output->has_grad()) continue;  // no gradient flowed here
    n->backward();
    if (anomaly_mode::enabled()) {
      for (auto& in : n->inputs)
        if (in && in->requires_grad && in->has_grad() && !in->grad_finite())
          fail(errc::value, "tfm anomaly: the backward pass of op '", n->op_name,
               "' produced a NaN or Inf gradient.");
    }
    // Intermediate outputs do not keep gradients once propagated (with retain_graph too: a
    // second backward must start from zero there, or it would count the first one again).
    if (n->output != root.get()) n->output->release_grad();
  }
  if (root_has_creator) root->release_grad();
  if (!opt.retain_graph) {
    // Free the graph: unlink every output from its node while all of them are alive, then drop
    // the closures (and their saved tensors) and the input links; the nodes die with `keep`.
    std::vector<std::shared_ptr<node>> keep;
    keep.reserve(order.size());
    for (node* n : order) keep.push_back(n->output->creator);
    for (node* n : order) {
      n->output->creator.reset();
      n->output->graph_freed = true;
    }
    for (node* n : order) {
      n->backward = nullptr;
      n->inputs.clear();
    }
  }
}

// ============================================================================================

template <class T, shape_type S>
class var {
  static_assert(is_floating_v<T>, "tfm::var: differentiable variables need a floating-point type");

 public:
  using value_type = T;
  using grad_type = grad_t<T>;
  using shape_type = S;
  static constexpr std::size_t rank = S::rank;

  /// An empty var (no data); assign to it before use.
  var() = default;
  /// A var holding a copy of `t` (a constant unless requires_grad).
  template <class X>
  requires dense_type<X>
  explicit var(const X& t, bool requires_grad = false) {
    auto v = t.view();
    static_assert(std::is_same_v<std::remove_cv_t<typename decltype(v)::value_type>, T>,
                  "tfm::var: the tensor's element type must match the var's");
    auto ext = v.shape().extents();
    S::from_extents(ext);  // checks static extents
    d_ = detail::make_var_data<T>(std::vector<index_t>(ext.begin(), ext.end()));
    tensor_view<T, S>(d_->value.data(), shape()) = v;
    d_->requires_grad = requires_grad;
  }
  /// Wraps an existing record (used by ops).
  explicit var(detail::var_ptr<T> d) : d_(std::move(d)) {
    if (d_) {
      std::array<index_t, rank> e{};
      if (d_->extents.size() != rank)
        fail(errc::shape, "tfm::var: a record of rank ", d_->extents.size(),
             " cannot be a var of rank ", rank, ".");
      for (std::size_t i = 0; i < rank; ++i) e[i] = d_->extents[i];
      S::from_extents(e);
    }
  }

  bool defined() const noexcept { return d_ != nullptr; }
  S shape() const {
    std::array<index_t, rank> e{};
    for (std::size_t i = 0; i < rank; ++i) e[i] = d_->extents[i];
    return S::from_extents(e);
  }
  index_t extent(std::size_t i) const { return d_->extents[i]; }
  index_t size() const { return d_->size(); }

  /// The value (read-only view).
  tensor_view<const T, S> value() const { return {d_->value.data(), shape()}; }
  /// The value of the only element, e.g. a scalar loss: `loss.item()` (PyTorch's
  /// Tensor.item()). For rank 0 and any shape holding exactly one element; a static shape that
  /// cannot hold one does not compile, a dynamic one of another size raises tfm::shape_error.
  T item() const {
    static_assert(detail::may_hold_one_element<S>,
                  "tfm::var::item: the var's static shape holds more than one element (or "
                  "none); read an element with value()(i, ...) instead.");
    if (!d_) fail(errc::value, "tfm::var::item: the var is empty (default-constructed).");
    detail::check_one_element(shape(), "tfm::var", "value()(i, ...)");
    return d_->value.data()[0];
  }
  /// static_cast<float>(loss) for a rank-0 var: its value.
  explicit operator T() const requires(S::rank == 0) { return item(); }
  /// The value for in-place updates (optimizers); not recorded.
  tensor_view<T, S> mutable_value() const { return {d_->value.data(), shape()}; }
  /// The accumulated gradient (zero-filled if none arrived yet).
  tensor_view<grad_type, S> grad() const { return {d_->grad_data(), shape()}; }
  bool has_grad() const noexcept { return d_ && d_->has_grad(); }
  /// Drops the gradient (it reads as zeros afterwards).
  void zero_grad() const { d_->release_grad(); }

  bool requires_grad() const noexcept { return d_ && d_->requires_grad; }
  /// Marks a leaf as requiring gradients (not allowed on op outputs).
  var& requires_grad(bool on) {
    if (d_->creator && !on)
      fail(errc::value,
           "tfm::var: cannot stop an op's output from requiring gradients; use detach().");
    d_->requires_grad = on;
    return *this;
  }
  /// True for vars no recorded op produced.
  bool is_leaf() const noexcept { return !d_->creator; }
  /// The name of the op that produced this var ("" for leaves).
  const char* op_name() const noexcept { return d_->creator ? d_->creator->op_name : ""; }

  /// Same value, not connected to the graph (shares nothing: a copy of the value).
  var detach() const {
    auto d = detail::make_var_data<T>(d_->extents);
    if (size())
      std::memcpy(static_cast<void*>(d->value.data()), d_->value.data(),
                  sizeof(T) * static_cast<std::size_t>(size()));
    return var(std::move(d));
  }

  /// Backpropagates from this var (a scalar loss, or any var: seeded with ones).
  void backward(backward_options opt = {}) const { backward_from(d_, opt); }

  /// Optional name for reports and state dicts.
  const std::string& name() const { return d_->name; }
  var& set_name(std::string n) {
    d_->name = std::move(n);
    return *this;
  }

  /// The shared record (for ops and optimizers).
  const detail::var_ptr<T>& data() const noexcept { return d_; }

 private:
  detail::var_ptr<T> d_;
};

/// A leaf var that requires gradients, holding a copy of `t`.
template <class X>
requires dense_type<X>
auto parameter(const X& t) {
  auto v = t.view();
  using V = decltype(v);
  return var<std::remove_cv_t<typename V::value_type>, typename V::shape_type>(t, true);
}

/// A constant var (no gradient) holding a copy of `t`.
template <class X>
requires dense_type<X>
auto constant(const X& t) {
  auto v = t.view();
  using V = decltype(v);
  return var<std::remove_cv_t<typename V::value_type>, typename V::shape_type>(t, false);
}

namespace detail {
template <class X>
struct is_var : std::false_type {};
template <class T, class S>
struct is_var<var<T, S>> : std::true_type {};
}  // namespace detail

/// Satisfied by tfm::var<...>.
template <class X>
concept var_type = detail::is_var<std::remove_cvref_t<X>>::value;

/// backward(loss) == loss.backward().
template <class T, class S>
void backward(const var<T, S>& loss, backward_options opt = {}) {
  loss.backward(opt);
}

TFM_END_NAMESPACE
