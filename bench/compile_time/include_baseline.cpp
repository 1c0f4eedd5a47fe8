// Baseline for run.sh: the standard headers typeformer/core.hpp pulls in, without typeformer.
#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <tuple>
#include <vector>
#include <xsimd/xsimd.hpp>
int main() { return 0; }
