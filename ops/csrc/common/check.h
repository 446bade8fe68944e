// Argument checks of the ops. PD_CHECK_VALUE / PD_CHECK_TYPE throw std::invalid_argument, which
// reaches Python as ValueError (pybind11's translation) for every argument error of a raw
// torch.ops.pointdistiller call. The Python functions in pointdistiller.ops check types first and
// raise TypeError themselves; PD_CHECK_TYPE marks the checks that they duplicate.
//
// Why not TORCH_CHECK_VALUE / TORCH_CHECK_TYPE (c10::ValueError / c10::TypeError): on a GPU machine
// (torch 2.11.0+cu130 in its own Python, extension built there with nvcc 13.0 and its g++), any c10
// error thrown inside one of our CUDA kernels killed the process with SIGSEGV instead of raising:
// from a .cu or a .cpp file alike, and also when built without a C++ backtrace. A
// std::invalid_argument thrown from the same places crossed to Python as a ValueError.
#pragma once

#include <c10/macros/Macros.h>
#include <c10/util/StringUtil.h>

#include <stdexcept>

#define PD_CHECK_VALUE(cond, ...)                                  \
  do {                                                             \
    if (C10_UNLIKELY(!(cond))) {                                   \
      throw std::invalid_argument(::c10::str(__VA_ARGS__));        \
    }                                                              \
  } while (false)

#define PD_CHECK_TYPE(cond, ...) PD_CHECK_VALUE(cond, __VA_ARGS__)
