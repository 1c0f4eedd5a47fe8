// typeformer/core/print.hpp
//
// Printing: `std::cout << t` writes the type line and the elements NumPy-style, eliding the
// middle of long axes ("...") the way NumPy does past 1000 elements, and ends with a newline:
//
//   tensor<f32> (2, 3)
//   [[1, 2, 3],
//    [4, 5, 6]]
//
// A rank-0 tensor prints as a bare number with no type line and no newline, the way a float
// does: `std::cout << "loss " << loss.value() << "\n"` writes `loss 0.693147`.
// `std::cout << v` for a tfm::var prints its value the same way ("var(empty)" for a
// default-constructed one); vars are only declared here, so core/ does not include autodiff/.
#pragma once

#include "typeformer/core/dtype.hpp"
#include "typeformer/core/tensor.hpp"

#include <ostream>
#include <sstream>
#include <string>
#include <type_traits>

TFM_BEGIN_NAMESPACE

struct print_options {
  index_t edge_items = 3;    // items shown at each end of an elided axis
  index_t threshold = 1000;  // elide when the tensor has more elements than this
  int precision = 6;         // significant digits
};

namespace detail {
template <class T>
void print_value(std::ostream& os, const T& v) {
  if constexpr (is_half_v<T>)
    os << static_cast<float>(v);
  else if constexpr (std::is_same_v<T, std::int8_t> || std::is_same_v<T, std::uint8_t>)
    os << static_cast<int>(v);
  else
    os << v;
}

template <class V>
void print_axis(std::ostream& os, const V& v, std::size_t axis, index_t offset, bool elide,
                const print_options& opt, int indent) {
  const index_t n = v.extent(axis);
  os << '[';
  for (index_t i = 0; i < n; ++i) {
    if (elide && n > 2 * opt.edge_items && i == opt.edge_items) {
      os << "...";
      i = n - opt.edge_items - 1;
      if (axis + 1 < V::rank)
        os << ",\n" << std::string(static_cast<std::size_t>(indent + 1), ' ');
      else
        os << ", ";
      continue;
    }
    index_t off = offset + i * v.stride(axis);
    if (axis + 1 == V::rank)
      print_value(os, v.data()[off]);
    else
      print_axis(os, v, axis + 1, off, elide, opt, indent + 1);
    if (i + 1 < n) {
      if (axis + 1 < V::rank) {
        os << ",\n";
        for (std::size_t k = axis + 1; k + 1 < V::rank; ++k) os << '\n';
        os << std::string(static_cast<std::size_t>(indent + 1), ' ');
      } else {
        os << ", ";
      }
    }
  }
  os << ']';
}
}  // namespace detail

/// Writes the elements of a tensor or view.
template <class X>
requires dense_type<X> std::ostream& print(std::ostream& os, const X& x,
                                           const print_options& opt = {}) {
  auto v = x.view();
  using V = decltype(v);
  std::ios::fmtflags f = os.flags();
  auto prec = os.precision(opt.precision);
  if constexpr (V::rank == 0) {
    detail::print_value(os, *v.data());
  } else {
    os << "tensor<" << dtype_name<typename V::value_type>() << "> " << v.shape().to_string()
       << '\n';
    detail::print_axis(os, v, 0, 0, v.size() > opt.threshold, opt, 0);
    os << '\n';
  }
  os.flags(f);
  os.precision(prec);
  return os;
}

template <class X>
requires dense_type<X> std::ostream& operator<<(std::ostream& os, const X& x) {
  return print(os, x);
}

template <class T, shape_type S>
class var;  // autodiff/variable.hpp

/// Prints a var's value (see print()); a default-constructed var prints "var(empty)".
template <class T, shape_type S>
std::ostream& operator<<(std::ostream& os, const var<T, S>& v) {
  if (!v.defined()) return os << "var(empty)";
  return print(os, v.value());
}

/// The printed form as a string.
template <class X>
requires dense_type<X> std::string to_string(const X& x, const print_options& opt = {}) {
  std::ostringstream os;
  print(os, x, opt);
  return os.str();
}

TFM_END_NAMESPACE
