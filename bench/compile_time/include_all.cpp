#include "typeformer/typeformer.hpp"
int main() { return 0; }
