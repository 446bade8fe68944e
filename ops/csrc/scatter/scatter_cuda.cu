// CUDA kernel of pointdistiller::scatter_reduce (contract in scatter.h).
//
// A stable sort of index groups each segment's rows in input order; segment bounds come from the
// sorted keys; then one thread per (segment, channel) walks its segment in input order, so sums and
// tie-breaks happen in the CPU kernel's order and the result is the same bits, without atomics.
// One synchronisation reads the smallest and largest index to check the range.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "scatter/scatter.h"

namespace pointdistiller {
namespace scatter {
namespace {

constexpr int kThreads = 256;

inline unsigned int blocks_for(int64_t n) {
  return static_cast<unsigned int>((n + kThreads - 1) / kThreads);
}

// start[s], end[s]: sorted positions of segment s (both 0 when it is empty).
__global__ void bounds_kernel(const int64_t* __restrict__ sorted, int64_t n,
                              int64_t* __restrict__ start, int64_t* __restrict__ end) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const int64_t s = sorted[i];
  if (s < 0) return;
  if (i == 0 || sorted[i - 1] != s) start[s] = i;
  if (i == n - 1 || sorted[i + 1] != s) end[s] = i + 1;
}

template <typename T, bool kMax>
__global__ void reduce_kernel(const T* __restrict__ features, const int64_t* __restrict__ order,
                              const int64_t* __restrict__ start, const int64_t* __restrict__ end,
                              int64_t segments, int64_t c, T* __restrict__ out,
                              int64_t* __restrict__ arg) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= segments * c) return;
  const int64_t s = t / c, k = t - s * c;
  const int64_t b = start[s], e = end[s];
  if (b == e) return;  // empty: out stays 0 (arg -1)
  if (kMax) {
    T best = T(0);
    int64_t best_row = -1;
    for (int64_t j = b; j < e; ++j) {
      const int64_t row = order[j];
      const T v = features[row * c + k];
      if (best_row < 0 || v > best || (v != v && best == best)) {
        best = v;
        best_row = row;
      }
    }
    out[t] = best;
    arg[t] = best_row;
  } else {
    T sum = T(0);
    for (int64_t j = b; j < e; ++j) sum += features[order[j] * c + k];
    out[t] = sum / static_cast<T>(e - b);
  }
}

std::tuple<at::Tensor, at::Tensor> scatter_reduce_cuda(const at::Tensor& features,
                                                       const at::Tensor& index,
                                                       int64_t num_segments,
                                                       c10::string_view reduce) {
  const Reduce op = check_args(features, index, num_segments, reduce);
  const c10::cuda::CUDAGuard device_guard(features.device());
  const at::Tensor f = features.contiguous();
  const at::Tensor ix = index.contiguous();
  const int64_t n = f.size(0), c = f.size(1);
  at::Tensor out = at::zeros({num_segments, c}, f.options());
  at::Tensor start = at::zeros({num_segments}, ix.options());
  at::Tensor end = at::zeros({num_segments}, ix.options());
  at::Tensor arg;
  if (op == Reduce::kMax) arg = at::full({num_segments, c}, -1, ix.options());
  if (n == 0) return {out, op == Reduce::kMean ? end : arg};

  at::Tensor sorted, order;
  std::tie(sorted, order) = at::sort(ix, /*stable=*/true, /*dim=*/0, /*descending=*/false);
  const at::Tensor extremes = at::cat({sorted.narrow(0, 0, 1), sorted.narrow(0, n - 1, 1)}).cpu();
  const int64_t lo = extremes.data_ptr<int64_t>()[0], hi = extremes.data_ptr<int64_t>()[1];
  if (lo < -1 || hi >= num_segments) {
    const int64_t first = ((ix < -1) | (ix >= num_segments)).nonzero()[0][0].item<int64_t>();
    throw_bad_index(first, ix[first].item<int64_t>(), num_segments);
  }
  if (num_segments == 0 || c == 0) return {out, op == Reduce::kMean ? end : arg};

  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  bounds_kernel<<<blocks_for(n), kThreads, 0, stream>>>(
      sorted.data_ptr<int64_t>(), n, start.data_ptr<int64_t>(), end.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "scatter_reduce_cuda", [&] {
    if (op == Reduce::kMax) {
      reduce_kernel<scalar_t, true><<<blocks_for(num_segments * c), kThreads, 0, stream>>>(
          f.data_ptr<scalar_t>(), order.data_ptr<int64_t>(), start.data_ptr<int64_t>(),
          end.data_ptr<int64_t>(), num_segments, c, out.data_ptr<scalar_t>(),
          arg.data_ptr<int64_t>());
    } else {
      reduce_kernel<scalar_t, false><<<blocks_for(num_segments * c), kThreads, 0, stream>>>(
          f.data_ptr<scalar_t>(), order.data_ptr<int64_t>(), start.data_ptr<int64_t>(),
          end.data_ptr<int64_t>(), num_segments, c, out.data_ptr<scalar_t>(), nullptr);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  if (op == Reduce::kMax) return {out, arg};
  return {out, end - start};
}

}  // namespace
}  // namespace scatter
}  // namespace pointdistiller

TORCH_LIBRARY_IMPL(pointdistiller, CUDA, m) {
  m.impl("scatter_reduce", &pointdistiller::scatter::scatter_reduce_cuda);
}
