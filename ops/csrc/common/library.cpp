// Declares the `pointdistiller` operator namespace. Each op folder adds its schemas with
// TORCH_LIBRARY_FRAGMENT(pointdistiller, m) in <op>.cpp and its kernels with TORCH_LIBRARY_IMPL.
#include <torch/library.h>

TORCH_LIBRARY(pointdistiller, m) {}
