// CUDA kernels of the PointNet++ ops (contracts in pointnet2.h). Every index they return equals the
// CPU kernels' bit for bit: they evaluate the contract's dist2 / in_box helpers and take rows in
// the contract's order; only the backward ops' float sums (atomics) may differ in the last bits.
//
// furthest_point_sample: one block per sample (32..512 threads, a multiple of 32 fitted to the
//   largest sample), a float32 min-d2 workspace per row (+inf at the start). Each iteration every
//   thread lowers the min-d2 of its rows (i = lo + tid + k * blockDim) to the newest pick and keeps
//   its largest (first at ties, so its lowest row); the block reduces (value, row) pairs by warp
//   shuffles and then shared memory, larger value first, ties to the lower row. Thread 0 writes the
//   pick.
// ball_query, roipoint_pool3d (selection): one warp per center / box (8 per block, grid-stride).
//   The warp scans the sample's rows in index order 32 at a time; the lanes whose row qualifies
//   take the next slots in lane order (ballot + popc of the lower lanes), so the slots hold the
//   lowest qualifying rows in index order, as the sequential scan does; the scan stops once
//   nsample / num_sampled rows are found.
// roipoint_pool3d (gather), group_points, three_interpolate and their backward ops: one thread per
//   output (or grad) element, grid-stride; the backward ops atomicAdd into float32 zero buffers.
// points_in_boxes: one thread per point, grid-stride; the first box of its sample containing it.
//
// The cos / sin of the box yaws are computed on the host with std::cos / std::sin of the double
// yaw, as the CPU kernel does: the device's double cos / sin are not guaranteed to round the same
// way as the host libm, and one ulp can move a point across a box border.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>
#include <vector>

#include "common/check.h"
#include "pointnet2/pointnet2.h"

namespace pointdistiller {
namespace pointnet2 {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;       // warp-per-item kernels: items per block
constexpr int64_t kMaxBlocks = 65535LL * 8;  // grid-stride beyond this
constexpr int kFpsMaxThreads = 512;
constexpr unsigned kFullMask = 0xffffffffu;

unsigned num_blocks(int64_t items, int64_t per_block) {
  return static_cast<unsigned>(std::min<int64_t>((items + per_block - 1) / per_block, kMaxBlocks));
}

std::vector<int64_t> host_vector(const at::Tensor& t) {
  const at::Tensor h = t.contiguous().cpu();
  return std::vector<int64_t>(h.data_ptr<int64_t>(), h.data_ptr<int64_t>() + h.numel());
}

// (cos, sin) of each box's yaw in float64, [R, 2] on the boxes' device (see the file comment).
at::Tensor box_trig(const at::Tensor& boxes) {
  const at::Tensor h = boxes.contiguous().cpu();
  const int64_t r = h.size(0);
  at::Tensor t = at::empty({r, 2}, h.options().dtype(at::kDouble));
  const float* bp = h.data_ptr<float>();
  double* tp = t.data_ptr<double>();
  for (int64_t i = 0; i < r; ++i) {
    tp[i * 2] = std::cos(static_cast<double>(bp[i * 7 + 6]));
    tp[i * 2 + 1] = std::sin(static_cast<double>(bp[i * 7 + 6]));
  }
  return t.to(boxes.device());
}

// The sample b in [0, num_samples) with offsets[b] <= i < offsets[b + 1] (i < offsets[B]).
__device__ __forceinline__ int64_t sample_of(const int64_t* __restrict__ offsets,
                                             int64_t num_samples, int64_t i) {
  int64_t a = 0, z = num_samples;  // offsets[a] <= i < offsets[z]
  while (z - a > 1) {
    const int64_t mid = a + (z - a) / 2;
    if (offsets[mid] <= i) {
      a = mid;
    } else {
      z = mid;
    }
  }
  return a;
}

// (v0, i0) goes before (v1, i1) in the FPS order: larger min-d2 first, ties to the lower row.
__device__ __forceinline__ bool fps_better(float v0, int64_t i0, float v1, int64_t i1) {
  return v0 > v1 || (v0 == v1 && i0 < i1);
}

__device__ __forceinline__ void fps_warp_reduce(float& v, int64_t& i) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const float ov = __shfl_down_sync(kFullMask, v, off);
    const int64_t oi = __shfl_down_sync(kFullMask, i, off);
    if (fps_better(ov, oi, v, i)) {
      v = ov;
      i = oi;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// furthest point sampling
// ---------------------------------------------------------------------------------------------
// grid: one block per sample; out_offsets [B + 1] are the cumulative counts.
__global__ void __launch_bounds__(kFpsMaxThreads)
    fps_kernel(const float* __restrict__ xyz, const int64_t* __restrict__ offsets,
               const int64_t* __restrict__ out_offsets, float* __restrict__ mind,
               int64_t* __restrict__ out) {
  __shared__ float s_val[kFpsMaxThreads / 32];
  __shared__ int64_t s_idx[kFpsMaxThreads / 32];
  __shared__ int64_t s_pick;
  const int64_t b = blockIdx.x;
  const int64_t o0 = out_offsets[b];
  const int64_t count = out_offsets[b + 1] - o0;
  if (count == 0) return;  // block-uniform
  const int64_t lo = offsets[b], hi = offsets[b + 1];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int nwarps = blockDim.x / 32;

  int64_t pick = lo;
  if (threadIdx.x == 0) out[o0] = lo;
  for (int64_t s = 1; s < count; ++s) {
    const float p[3] = {xyz[pick * 3], xyz[pick * 3 + 1], xyz[pick * 3 + 2]};
    float bv = -1.0f;  // below every min-d2 (>= 0 or +inf)
    int64_t bi = INT64_MAX;
    for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) {
      float m = mind[i];
      const float d = dist2(p, xyz + i * 3);
      if (d < m) {
        m = d;
        mind[i] = d;
      }
      if (m > bv) {  // rows ascend per thread: strict keeps the lowest row at ties
        bv = m;
        bi = i;
      }
    }
    fps_warp_reduce(bv, bi);
    if (lane == 0) {
      s_val[warp] = bv;
      s_idx[warp] = bi;
    }
    __syncthreads();
    if (warp == 0) {
      bv = lane < nwarps ? s_val[lane] : -1.0f;
      bi = lane < nwarps ? s_idx[lane] : INT64_MAX;
      fps_warp_reduce(bv, bi);
      if (lane == 0) {
        s_pick = bi;
        out[o0 + s] = bi;
      }
    }
    __syncthreads();
    pick = s_pick;
  }
}

at::Tensor furthest_point_sample_cuda(const at::Tensor& points_in, const at::Tensor& offsets_in,
                                      const at::Tensor& counts_in) {
  check_fps_args(points_in, offsets_in, counts_in);
  const c10::cuda::CUDAGuard guard(points_in.device());
  const at::Tensor points = points_in.contiguous();
  const at::Tensor offsets = offsets_in.contiguous();
  const std::vector<int64_t> off = host_vector(offsets_in);
  const std::vector<int64_t> counts = host_vector(counts_in);
  const int64_t num_samples = static_cast<int64_t>(counts.size());
  at::Tensor out_off_h = at::empty({num_samples + 1}, at::kLong);
  int64_t* oo = out_off_h.data_ptr<int64_t>();
  oo[0] = 0;
  int64_t max_rows = 0;
  for (int64_t b = 0; b < num_samples; ++b) {
    oo[b + 1] = oo[b] + counts[b];
    if (counts[b] > 0) max_rows = std::max(max_rows, off[b + 1] - off[b]);
  }
  const int64_t total = oo[num_samples];
  at::Tensor out = at::empty({total}, points.options().dtype(at::kLong));
  if (total == 0) return out;
  PD_CHECK_VALUE(num_samples <= INT32_MAX, "furthest_point_sample: too many samples (",
                 num_samples, ")");
  const at::Tensor out_off = out_off_h.to(points.device());
  at::Tensor mind = at::full({points.size(0)}, std::numeric_limits<float>::infinity(),
                             points.options());
  const int threads = static_cast<int>(
      std::min<int64_t>(kFpsMaxThreads, std::max<int64_t>(32, (max_rows + 31) / 32 * 32)));
  fps_kernel<<<static_cast<unsigned>(num_samples), threads, 0,
               c10::cuda::getCurrentCUDAStream()>>>(
      points.data_ptr<float>(), offsets.data_ptr<int64_t>(), out_off.data_ptr<int64_t>(),
      mind.data_ptr<float>(), out.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

// ---------------------------------------------------------------------------------------------
// ball query
// ---------------------------------------------------------------------------------------------
// One warp per center (grid-stride over warps; every loop condition is warp-uniform).
__global__ void __launch_bounds__(kThreads)
    ball_query_kernel(const float* __restrict__ xyz, const int64_t* __restrict__ offsets,
                      const float* __restrict__ centers,
                      const int64_t* __restrict__ center_offsets, int64_t num_samples,
                      int64_t num_centers, float r2, int64_t nsample, int64_t* __restrict__ idx,
                      int64_t* __restrict__ count) {
  const int lane = threadIdx.x % 32;
  const unsigned lower_lanes = (1u << lane) - 1u;
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32; c < num_centers;
       c += static_cast<int64_t>(gridDim.x) * kWarps) {
    const int64_t b = sample_of(center_offsets, num_samples, c);
    const int64_t lo = offsets[b], hi = offsets[b + 1];
    const float q[3] = {centers[c * 3], centers[c * 3 + 1], centers[c * 3 + 2]};
    int64_t* o = idx + c * nsample;
    int64_t found = 0;
    int64_t first = lo;  // the sample's first row when nothing is found
    for (int64_t base = lo; base < hi && found < nsample; base += 32) {
      const int64_t i = base + lane;
      const bool in = i < hi && dist2(xyz + i * 3, q) < r2;
      const unsigned mask = __ballot_sync(kFullMask, in);
      if (mask == 0) continue;
      if (found == 0) first = base + (__ffs(mask) - 1);
      if (in) {
        const int64_t slot = found + __popc(mask & lower_lanes);
        if (slot < nsample) o[slot] = i;
      }
      found += __popc(mask);
    }
    const int64_t take = found < nsample ? found : nsample;
    for (int64_t s = take + lane; s < nsample; s += 32) o[s] = first;
    if (lane == 0) count[c] = take;
  }
}

std::tuple<at::Tensor, at::Tensor> ball_query_cuda(const at::Tensor& points_in,
                                                    const at::Tensor& offsets_in,
                                                    const at::Tensor& centers_in,
                                                    const at::Tensor& center_offsets_in,
                                                    double radius, int64_t nsample) {
  check_ball_query_args(points_in, offsets_in, centers_in, center_offsets_in, radius, nsample);
  const c10::cuda::CUDAGuard guard(points_in.device());
  const at::Tensor points = points_in.contiguous(), centers = centers_in.contiguous();
  const at::Tensor offsets = offsets_in.contiguous();
  const at::Tensor center_offsets = center_offsets_in.contiguous();
  const int64_t m = centers.size(0);
  at::Tensor idx = at::empty({m, nsample}, points.options().dtype(at::kLong));
  at::Tensor count = at::empty({m}, points.options().dtype(at::kLong));
  if (m == 0) return {idx, count};
  // One float32 product, as the contract and the CPU kernel (nothing to fuse).
  const float rf = static_cast<float>(radius);
  const float r2 = rf * rf;
  ball_query_kernel<<<num_blocks(m, kWarps), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      points.data_ptr<float>(), offsets.data_ptr<int64_t>(), centers.data_ptr<float>(),
      center_offsets.data_ptr<int64_t>(), offsets.numel() - 1, m, r2, nsample,
      idx.data_ptr<int64_t>(), count.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {idx, count};
}

// ---------------------------------------------------------------------------------------------
// grouping and interpolation
// ---------------------------------------------------------------------------------------------
// out [M, C, K]: out[m, c, k] = f[idx[m, k], c]; consecutive threads write consecutive k.
__global__ void group_points_kernel(const float* __restrict__ f, const int64_t* __restrict__ idx,
                                    int64_t m, int64_t c, int64_t k, float* __restrict__ out) {
  const int64_t n = m * c * k;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t j = e % k;
    const int64_t ch = (e / k) % c;
    const int64_t i = e / (c * k);
    out[e] = f[idx[i * k + j] * c + ch];
  }
}

__global__ void group_points_backward_kernel(const float* __restrict__ g,
                                             const int64_t* __restrict__ idx, int64_t m,
                                             int64_t c, int64_t k, float* __restrict__ out) {
  const int64_t n = m * c * k;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t j = e % k;
    const int64_t ch = (e / k) % c;
    const int64_t i = e / (c * k);
    atomicAdd(out + idx[i * k + j] * c + ch, g[e]);
  }
}

at::Tensor group_points_cuda(const at::Tensor& features_in, const at::Tensor& idx_in) {
  check_group_args(features_in, idx_in);
  const c10::cuda::CUDAGuard guard(features_in.device());
  const at::Tensor f = features_in.contiguous(), idx = idx_in.contiguous();
  const int64_t m = idx.size(0), k = idx.size(1), c = f.size(1);
  at::Tensor out = at::empty({m, c, k}, f.options());
  if (out.numel() == 0) return out;
  group_points_kernel<<<num_blocks(out.numel(), kThreads), kThreads, 0,
                        c10::cuda::getCurrentCUDAStream()>>>(
      f.data_ptr<float>(), idx.data_ptr<int64_t>(), m, c, k, out.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor group_points_backward_cuda(const at::Tensor& grad_in, const at::Tensor& idx_in,
                                      int64_t num_rows) {
  PD_CHECK_VALUE(num_rows >= 0, "group_points_backward: num_rows must be >= 0, got ", num_rows);
  check_index(idx_in, num_rows, grad_in, "group_points_backward");
  PD_CHECK_TYPE(grad_in.scalar_type() == at::kFloat, "group_points_backward: grad must be float32");
  PD_CHECK_VALUE(grad_in.dim() == 3 && grad_in.size(0) == idx_in.size(0) &&
                     grad_in.size(2) == idx_in.size(1),
                 "group_points_backward: grad must be [M, C, K] with [M, K] = idx.shape = ",
                 idx_in.sizes(), ", got ", grad_in.sizes());
  const c10::cuda::CUDAGuard guard(grad_in.device());
  const at::Tensor g = grad_in.contiguous(), idx = idx_in.contiguous();
  const int64_t m = idx.size(0), k = idx.size(1), c = g.size(1);
  at::Tensor out = at::zeros({num_rows, c}, g.options());
  if (g.numel() == 0) return out;
  group_points_backward_kernel<<<num_blocks(g.numel(), kThreads), kThreads, 0,
                                 c10::cuda::getCurrentCUDAStream()>>>(
      g.data_ptr<float>(), idx.data_ptr<int64_t>(), m, c, k, out.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

// out [N, C]: ((w0 f[i0, c] + w1 f[i1, c]) + w2 f[i2, c]), each step rounded (no FMA).
__global__ void three_interpolate_kernel(const float* __restrict__ f,
                                         const int64_t* __restrict__ idx,
                                         const float* __restrict__ w, int64_t n, int64_t c,
                                         float* __restrict__ out) {
  const int64_t total = n * c;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t ch = e % c;
    const int64_t i = e / c;
    const float a = __fmul_rn(w[i * 3], f[idx[i * 3] * c + ch]);
    const float b = __fmul_rn(w[i * 3 + 1], f[idx[i * 3 + 1] * c + ch]);
    const float d = __fmul_rn(w[i * 3 + 2], f[idx[i * 3 + 2] * c + ch]);
    out[e] = __fadd_rn(__fadd_rn(a, b), d);
  }
}

__global__ void three_interpolate_backward_kernel(const float* __restrict__ g,
                                                  const int64_t* __restrict__ idx,
                                                  const float* __restrict__ w, int64_t n,
                                                  int64_t c, float* __restrict__ out) {
  const int64_t total = n * c;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t ch = e % c;
    const int64_t i = e / c;
    const float gv = g[e];
#pragma unroll
    for (int j = 0; j < 3; ++j) {
      atomicAdd(out + idx[i * 3 + j] * c + ch, __fmul_rn(w[i * 3 + j], gv));
    }
  }
}

at::Tensor three_interpolate_cuda(const at::Tensor& features_in, const at::Tensor& idx_in,
                                  const at::Tensor& weight_in) {
  check_three_interpolate_args(features_in, idx_in, weight_in);
  const c10::cuda::CUDAGuard guard(features_in.device());
  const at::Tensor f = features_in.contiguous(), idx = idx_in.contiguous(),
                   w = weight_in.contiguous();
  const int64_t n = idx.size(0), c = f.size(1);
  at::Tensor out = at::empty({n, c}, f.options());
  if (out.numel() == 0) return out;
  three_interpolate_kernel<<<num_blocks(out.numel(), kThreads), kThreads, 0,
                             c10::cuda::getCurrentCUDAStream()>>>(
      f.data_ptr<float>(), idx.data_ptr<int64_t>(), w.data_ptr<float>(), n, c,
      out.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor three_interpolate_backward_cuda(const at::Tensor& grad_in, const at::Tensor& idx_in,
                                           const at::Tensor& weight_in, int64_t num_rows) {
  PD_CHECK_VALUE(num_rows >= 0, "three_interpolate_backward: num_rows must be >= 0, got ",
                 num_rows);
  check_index(idx_in, num_rows, grad_in, "three_interpolate_backward", 3);
  PD_CHECK_TYPE(grad_in.scalar_type() == at::kFloat && weight_in.scalar_type() == at::kFloat,
                "three_interpolate_backward: grad and weight must be float32");
  PD_CHECK_VALUE(grad_in.dim() == 2 && grad_in.size(0) == idx_in.size(0) &&
                     weight_in.sizes() == idx_in.sizes(),
                 "three_interpolate_backward: grad must be [N, C] and weight [N, 3] with N = ",
                 idx_in.size(0));
  PD_CHECK_VALUE(weight_in.device() == grad_in.device(),
                 "three_interpolate_backward: weight is on ", weight_in.device(),
                 " but grad is on ", grad_in.device());
  const c10::cuda::CUDAGuard guard(grad_in.device());
  const at::Tensor g = grad_in.contiguous(), idx = idx_in.contiguous(), w = weight_in.contiguous();
  const int64_t n = idx.size(0), c = g.size(1);
  at::Tensor out = at::zeros({num_rows, c}, g.options());
  if (g.numel() == 0) return out;
  three_interpolate_backward_kernel<<<num_blocks(g.numel(), kThreads), kThreads, 0,
                                      c10::cuda::getCurrentCUDAStream()>>>(
      g.data_ptr<float>(), idx.data_ptr<int64_t>(), w.data_ptr<float>(), n, c,
      out.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

// ---------------------------------------------------------------------------------------------
// points in boxes, RoI point pooling
// ---------------------------------------------------------------------------------------------
// One thread per point: the lowest box of its sample containing it, -1 if none.
__global__ void points_in_boxes_kernel(const float* __restrict__ xyz,
                                       const int64_t* __restrict__ offsets,
                                       const float* __restrict__ boxes,
                                       const double* __restrict__ trig,
                                       const int64_t* __restrict__ box_offsets,
                                       int64_t num_samples, int64_t n, int64_t* __restrict__ out) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = sample_of(offsets, num_samples, i);
    const int64_t k1 = box_offsets[b + 1];
    int64_t found = -1;
    for (int64_t k = box_offsets[b]; k < k1; ++k) {
      if (in_box(xyz + i * 3, boxes + k * 7, trig[k * 2], trig[k * 2 + 1])) {
        found = k;
        break;
      }
    }
    out[i] = found;
  }
}

at::Tensor points_in_boxes_cuda(const at::Tensor& points_in, const at::Tensor& offsets_in,
                                const at::Tensor& boxes_in, const at::Tensor& box_offsets_in) {
  constexpr const char* op = "points_in_boxes";
  check_points(points_in, op);
  check_boxes(boxes_in, points_in, op);
  check_offsets(offsets_in, points_in.size(0), points_in, op, "offsets");
  check_offsets(box_offsets_in, boxes_in.size(0), points_in, op, "box_offsets");
  PD_CHECK_VALUE(offsets_in.numel() == box_offsets_in.numel(), op,
                 ": offsets and box_offsets must have the same length");
  const c10::cuda::CUDAGuard guard(points_in.device());
  const at::Tensor points = points_in.contiguous(), boxes = boxes_in.contiguous();
  const at::Tensor offsets = offsets_in.contiguous(), box_offsets = box_offsets_in.contiguous();
  const int64_t n = points.size(0), r = boxes.size(0);
  at::Tensor out = at::full({n}, -1, points.options().dtype(at::kLong));
  if (n == 0 || r == 0) return out;
  const at::Tensor trig = box_trig(boxes);
  points_in_boxes_kernel<<<num_blocks(n, kThreads), kThreads, 0,
                           c10::cuda::getCurrentCUDAStream()>>>(
      points.data_ptr<float>(), offsets.data_ptr<int64_t>(), boxes.data_ptr<float>(),
      trig.data_ptr<double>(), box_offsets.data_ptr<int64_t>(), offsets.numel() - 1, n,
      out.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

// One warp per box: rows [R, num_sampled] get the first min(n, num_sampled) rows of its sample
// inside it, in index order; take [R] = min(n, num_sampled); empty [R] = (n == 0).
__global__ void __launch_bounds__(kThreads)
    roipool_select_kernel(const float* __restrict__ xyz, const int64_t* __restrict__ offsets,
                          const float* __restrict__ boxes, const double* __restrict__ trig,
                          const int64_t* __restrict__ box_offsets, int64_t num_samples,
                          int64_t num_boxes, int64_t num_sampled, int64_t* __restrict__ rows,
                          int64_t* __restrict__ take, bool* __restrict__ empty) {
  const int lane = threadIdx.x % 32;
  const unsigned lower_lanes = (1u << lane) - 1u;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32; r < num_boxes;
       r += static_cast<int64_t>(gridDim.x) * kWarps) {
    const int64_t b = sample_of(box_offsets, num_samples, r);
    const int64_t lo = offsets[b], hi = offsets[b + 1];
    const float* box = boxes + r * 7;
    const double c = trig[r * 2], s = trig[r * 2 + 1];
    int64_t* o = rows + r * num_sampled;
    int64_t found = 0;
    for (int64_t base = lo; base < hi && found < num_sampled; base += 32) {
      const int64_t i = base + lane;
      const bool in = i < hi && in_box(xyz + i * 3, box, c, s);
      const unsigned mask = __ballot_sync(kFullMask, in);
      if (in) {
        const int64_t slot = found + __popc(mask & lower_lanes);
        if (slot < num_sampled) o[slot] = i;
      }
      found += __popc(mask);
    }
    if (lane == 0) {
      take[r] = found < num_sampled ? found : num_sampled;
      empty[r] = found == 0;
    }
  }
}

// pooled [R, num_sampled, 3 + C]: slot s of box r holds row rows[r, s mod take[r]] (xyz, then
// features); zeros when take[r] == 0.
__global__ void roipool_gather_kernel(const float* __restrict__ xyz, const float* __restrict__ f,
                                      const int64_t* __restrict__ rows,
                                      const int64_t* __restrict__ take, int64_t num_boxes,
                                      int64_t num_sampled, int64_t c, float* __restrict__ out) {
  const int64_t width = 3 + c;
  const int64_t total = num_boxes * num_sampled * width;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t ch = e % width;
    const int64_t slot = (e / width) % num_sampled;
    const int64_t r = e / (width * num_sampled);
    const int64_t n = take[r];
    float v = 0.0f;
    if (n > 0) {
      const int64_t row = rows[r * num_sampled + slot % n];
      v = ch < 3 ? xyz[row * 3 + ch] : f[row * c + (ch - 3)];
    }
    out[e] = v;
  }
}

std::tuple<at::Tensor, at::Tensor> roipoint_pool3d_cuda(const at::Tensor& points_in,
                                                        const at::Tensor& features_in,
                                                        const at::Tensor& offsets_in,
                                                        const at::Tensor& boxes_in,
                                                        const at::Tensor& box_offsets_in,
                                                        int64_t num_sampled) {
  check_roipool_args(points_in, features_in, offsets_in, boxes_in, box_offsets_in, num_sampled);
  const c10::cuda::CUDAGuard guard(points_in.device());
  const at::Tensor points = points_in.contiguous(), feats = features_in.contiguous(),
                   boxes = boxes_in.contiguous();
  const at::Tensor offsets = offsets_in.contiguous(), box_offsets = box_offsets_in.contiguous();
  const int64_t r = boxes.size(0), c = feats.size(1);
  at::Tensor pooled = at::empty({r, num_sampled, 3 + c}, points.options());
  at::Tensor empty = at::empty({r}, points.options().dtype(at::kBool));
  if (r == 0) return {pooled, empty};
  const at::Tensor trig = box_trig(boxes);
  at::Tensor rows = at::empty({r, num_sampled}, points.options().dtype(at::kLong));
  at::Tensor take = at::empty({r}, points.options().dtype(at::kLong));
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  roipool_select_kernel<<<num_blocks(r, kWarps), kThreads, 0, stream>>>(
      points.data_ptr<float>(), offsets.data_ptr<int64_t>(), boxes.data_ptr<float>(),
      trig.data_ptr<double>(), box_offsets.data_ptr<int64_t>(), offsets.numel() - 1, r,
      num_sampled, rows.data_ptr<int64_t>(), take.data_ptr<int64_t>(), empty.data_ptr<bool>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  roipool_gather_kernel<<<num_blocks(pooled.numel(), kThreads), kThreads, 0, stream>>>(
      points.data_ptr<float>(), feats.data_ptr<float>(), rows.data_ptr<int64_t>(),
      take.data_ptr<int64_t>(), r, num_sampled, c, pooled.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {pooled, empty};
}

}  // namespace
}  // namespace pointnet2
}  // namespace pointdistiller

TORCH_LIBRARY_IMPL(pointdistiller, CUDA, m) {
  using namespace pointdistiller::pointnet2;
  m.impl("furthest_point_sample", &furthest_point_sample_cuda);
  m.impl("ball_query", &ball_query_cuda);
  m.impl("group_points", &group_points_cuda);
  m.impl("group_points_backward", &group_points_backward_cuda);
  m.impl("three_interpolate", &three_interpolate_cuda);
  m.impl("three_interpolate_backward", &three_interpolate_backward_cuda);
  m.impl("points_in_boxes", &points_in_boxes_cuda);
  m.impl("roipoint_pool3d", &roipoint_pool3d_cuda);
}
