// A tour of typeformer's tensor core: static and dynamic shapes, views, fused expressions,
// reductions, matmul and row ops, and the error you get for a wrong shape.
//
//   ./tensor_basics            (built by ./scripts/demo and by the test build)
#include <typeformer/typeformer.hpp>

#include <chrono>
#include <cstdio>
#include <iostream>

int main() {
  using namespace tfm;

  // Shapes live in types: 2 x 3 is known at compile time, the batch axis at run time.
  tensor<float, shape<2, 3>> a{{1, 2, 3}, {4, 5, 6}};
  tensor<float, shape<3>> bias{0.5f, -0.5f, 1.0f};
  std::cout << "a =\n" << a << "\n\n";

  // One fused pass, no temporaries: bias broadcasts along the rows.
  tensor<float, shape<2, 3>> y = gelu(a * 2.0f + bias);
  std::cout << "gelu(a * 2 + bias) =\n" << y << "\n\n";

  // Views share elements: the transpose is a layout, not a copy.
  auto at = transpose(a);  // tensor_view<float, shape<3, 2>>
  std::cout << "transpose(a)(2, 1) = " << at(2, 1) << "\n";
  std::cout << "row sums = " << sum<1>(a) << "\n";
  std::cout << "softmax(a) =\n" << softmax(a) << "\n\n";

  // Matmul with a transposed operand goes to the GEMM as a flag.
  auto gram = matmul(a, transpose(a));  // tensor<float, shape<2, 2>>
  std::cout << "a a^T =\n" << gram << "\n\n";

  // Dynamic extents: a batch of 64 rows of 768 features, from a reproducible generator.
  const index_t batch = 64;
  auto x = randn<float>(shape<dyn, 768>(batch), /*seed=*/1);
  auto w = randn<float>(shape<768, 3072>{}, /*seed=*/2, /*stddev=*/0.02f);
  auto t0 = std::chrono::steady_clock::now();
  auto h = matmul(x, w);  // tensor<float, shape<dyn, 3072>>
  tensor<float, shape<dyn, 3072>> act = gelu(h);
  auto t1 = std::chrono::steady_clock::now();
  double ms = std::chrono::duration<double, std::milli>(t1 - t0).count();
  std::printf("MLP up-projection (64 x 768) x (768 x 3072) + gelu: %.2f ms, mean activation %.5f\n",
              ms, static_cast<double>(mean(act)));
  auto xn = rms_norm(x, none);
  std::cout << "rms_norm(x)[:2, :4] = " << slice<0>(slice<1>(xn, 0, 4), 0, 2) << "\n";

  // A wrong dynamic shape is a clear error, not undefined behaviour.
  tensor<float, shape<dyn, 4>> wrong(5);
  try {
    auto bad = matmul(x, wrong);
    (void)bad;
  } catch (const shape_error& e) {
    std::printf("caught shape_error: %s\n", e.what());
  }
  // (A wrong *static* shape, such as a + tensor<float, shape<4, 4>>{}, does not compile.)
  return 0;
}
