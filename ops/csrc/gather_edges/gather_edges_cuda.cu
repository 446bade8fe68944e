// CUDA kernels of pointdistiller::gather_edges and gather_edges_backward (contract in
// gather_edges.h). Forward: one thread per output element, writes coalesced along k. Backward: one
// thread per neighbour gradient element and one per (query, channel) centre row sum, added with
// atomics into a float32/float64 buffer (order not deterministic).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

#include "gather_edges/gather_edges.h"

namespace pointdistiller {
namespace {

constexpr int kThreads = 256;

int64_t num_blocks(int64_t n) {
  return std::min<int64_t>((n + kThreads - 1) / kThreads, 65535LL * 8);
}

template <typename scalar_t>
__global__ void gather_forward_kernel(const scalar_t* __restrict__ f,
                                      const int64_t* __restrict__ idx,
                                      const int64_t* __restrict__ centre, int64_t Q, int64_t C,
                                      int64_t k, scalar_t* __restrict__ out) {
  const int64_t n = Q * 2 * C * k;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t j = e % k;
    const int64_t ch = (e / k) % (2 * C);
    const int64_t q = e / (2 * C * k);
    out[e] = ch < C ? f[idx[q * k + j] * C + ch] : f[centre[q] * C + (ch - C)];
  }
}

template <typename scalar_t, typename acc_t>
__global__ void scatter_neighbours_kernel(const scalar_t* __restrict__ g,
                                          const int64_t* __restrict__ idx, int64_t Q, int64_t C,
                                          int64_t k, acc_t* __restrict__ acc) {
  const int64_t n = Q * C * k;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t j = e % k;
    const int64_t c = (e / k) % C;
    const int64_t q = e / (C * k);
    atomicAdd(acc + idx[q * k + j] * C + c, static_cast<acc_t>(g[(q * 2 * C + c) * k + j]));
  }
}

template <typename scalar_t, typename acc_t>
__global__ void scatter_centres_kernel(const scalar_t* __restrict__ g,
                                       const int64_t* __restrict__ centre, int64_t Q, int64_t C,
                                       int64_t k, acc_t* __restrict__ acc) {
  const int64_t n = Q * C;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = e % C;
    const int64_t q = e / C;
    const scalar_t* row = g + (q * 2 * C + C + c) * k;
    acc_t s = 0;
    for (int64_t j = 0; j < k; ++j) s += static_cast<acc_t>(row[j]);
    atomicAdd(acc + centre[q] * C + c, s);
  }
}

at::Tensor gather_edges_cuda(const at::Tensor& features, const at::Tensor& idx,
                             const at::Tensor& centre) {
  gather_edges_detail::check_forward_args(features, idx, centre);
  const c10::cuda::CUDAGuard guard(features.device());
  const at::Tensor f = features.contiguous();
  const at::Tensor i = idx.contiguous();
  const at::Tensor c = centre.contiguous();
  const int64_t Q = i.size(0), k = i.size(1), C = f.size(1);
  at::Tensor out = at::empty({Q, 2 * C, k}, f.options());
  if (out.numel() == 0) return out;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f.scalar_type(), "gather_edges_cuda",
                                  [&] {
                                    gather_forward_kernel<scalar_t>
                                        <<<num_blocks(out.numel()), kThreads, 0, stream>>>(
                                            f.data_ptr<scalar_t>(), i.data_ptr<int64_t>(),
                                            c.data_ptr<int64_t>(), Q, C, k,
                                            out.data_ptr<scalar_t>());
                                  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor gather_edges_backward_cuda(const at::Tensor& grad, const at::Tensor& idx,
                                      const at::Tensor& centre, int64_t num_rows) {
  gather_edges_detail::check_backward_args(grad, idx, centre, num_rows);
  const c10::cuda::CUDAGuard guard(grad.device());
  const at::Tensor g = grad.contiguous();
  const at::Tensor i = idx.contiguous();
  const at::Tensor c = centre.contiguous();
  const int64_t Q = i.size(0), k = i.size(1), C = g.size(1) / 2;
  const at::ScalarType acc_type = at::toOpMathType(g.scalar_type());
  at::Tensor acc = at::zeros({num_rows, C}, g.options().dtype(acc_type));
  if (Q > 0 && k > 0 && C > 0) {
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, g.scalar_type(), "gather_edges_backward_cuda", [&] {
          using acc_t = at::opmath_type<scalar_t>;
          scatter_neighbours_kernel<scalar_t, acc_t>
              <<<num_blocks(Q * C * k), kThreads, 0, stream>>>(
                  g.data_ptr<scalar_t>(), i.data_ptr<int64_t>(), Q, C, k, acc.data_ptr<acc_t>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
          scatter_centres_kernel<scalar_t, acc_t><<<num_blocks(Q * C), kThreads, 0, stream>>>(
              g.data_ptr<scalar_t>(), c.data_ptr<int64_t>(), Q, C, k, acc.data_ptr<acc_t>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
  }
  return acc_type == g.scalar_type() ? acc : acc.to(g.scalar_type());
}

}  // namespace
}  // namespace pointdistiller

TORCH_LIBRARY_IMPL(pointdistiller, CUDA, m) {
  m.impl("gather_edges", &pointdistiller::gather_edges_cuda);
  m.impl("gather_edges_backward", &pointdistiller::gather_edges_backward_cuda);
}
