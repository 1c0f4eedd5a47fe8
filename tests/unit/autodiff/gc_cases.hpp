// tests/unit/autodiff/gc_cases.hpp
//
// One gradcheck case per differentiable op of autodiff/registry.hpp. Each gc_<op>() runs
// tfm::testing::gradcheck in float64 on several shapes (broadcast, size-1 axes, inputs that are
// copies of permuted/sliced views, the op applied after permute/slice) and CHECKs the result with
// gc::expect_gc. gc_table.cpp maps every registry name to one of these functions.
#pragma once

namespace gc {
// gc_binary.cpp (add .. where), gc_unary.cpp (neg .. normal_cdf)
void gc_add();
void gc_sub();
void gc_mul();
void gc_div();
void gc_pow();
void gc_min_elementwise();  // gc_min() adds the reductions min<Axis>(v), min(v)
void gc_max_elementwise();
void gc_where();
void gc_neg();
void gc_exp();
void gc_log();
void gc_sqrt();
void gc_rsqrt();
void gc_tanh();
void gc_sigmoid();
void gc_silu();
void gc_gelu_tanh();
void gc_gelu_erf();
void gc_relu();
void gc_abs();
void gc_square();
void gc_erf();
void gc_normal_cdf();
// gc_shape.cpp
void gc_sum();
void gc_mean();
void gc_logsumexp();
void gc_min();  // elementwise minimum(a, b) and the reduction min
void gc_max();
void gc_reshape();
void gc_permute();
void gc_slice();
void gc_concat();
// gc_linalg.cpp
void gc_matmul();
void gc_linear();
void gc_lora_linear();
// gc_rows.cpp
void gc_embedding();
void gc_index_select();
void gc_gather();
void gc_softmax();
void gc_log_softmax();
void gc_layer_norm();
void gc_rms_norm();
// gc_misc.cpp
void gc_cross_entropy();
void gc_linear_cross_entropy();
void gc_dropout();
void gc_checkpoint();
void gc_rope();
// gc_attention.cpp
void gc_attention();
}  // namespace gc
