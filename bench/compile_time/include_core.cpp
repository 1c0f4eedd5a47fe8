#include "typeformer/core.hpp"
int main() { return 0; }
