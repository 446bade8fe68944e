// CUDA kernels of the iou3d ops. Pairwise ops: one thread per (a, b) pair (grid-stride loop over
// the flattened [N, M] output), the same float64 geometry as the CPU kernel (iou3d_geometry.h).
// NMS: boxes sorted by score (stable, descending) on the device; a kernel over 64 x 64 blocks of
// the upper triangle writes, for each box i, a 64-bit word per column block whose bit k says that
// box (block * 64 + k) > i has BEV IoU > iou_threshold with box i; the mask is copied to the host
// and reduced by the usual sequential greedy pass. Deterministic; equals the CPU result whenever
// the two devices' IoUs fall on the same side of the threshold.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "common/check.h"
#include "iou3d/iou3d.h"
#include "iou3d/iou3d_geometry.h"

namespace pointdistiller {
namespace iou3d {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 4096;  // grid-stride beyond this (enough to fill any current GPU)
constexpr int kNmsBlock = 64;  // boxes per NMS block = bits per mask word

template <typename PairFn>
__global__ void pairwise_kernel(const float* __restrict__ a, const float* __restrict__ b,
                                int64_t n, int64_t m, float* __restrict__ out) {
  const int64_t total = n * m;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += stride) {
    const float* box_a = a + (idx / m) * kBoxDim;
    const float* box_b = b + (idx % m) * kBoxDim;
    out[idx] = static_cast<float>(
        PairFn()(box_a, make_bev_geom(box_a), box_b, make_bev_geom(box_b)));
  }
}

template <typename PairFn>
at::Tensor pairwise_cuda(const at::Tensor& boxes_a_in, const at::Tensor& boxes_b_in) {
  check_box_pair(boxes_a_in, boxes_b_in);
  const c10::cuda::CUDAGuard device_guard(boxes_a_in.device());
  const at::Tensor boxes_a = boxes_a_in.contiguous();
  const at::Tensor boxes_b = boxes_b_in.contiguous();
  const int64_t n = boxes_a.size(0);
  const int64_t m = boxes_b.size(0);
  at::Tensor out = at::empty({n, m}, boxes_a.options());
  const int64_t total = n * m;
  if (total == 0) return out;
  const int blocks =
      static_cast<int>(std::min<int64_t>((total + kThreads - 1) / kThreads, kMaxBlocks));
  pairwise_kernel<PairFn><<<blocks, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      boxes_a.data_ptr<float>(), boxes_b.data_ptr<float>(), n, m, out.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor boxes_overlap_bev_cuda(const at::Tensor& boxes_a, const at::Tensor& boxes_b) {
  return pairwise_cuda<OverlapBevFn>(boxes_a, boxes_b);
}

at::Tensor boxes_iou_bev_cuda(const at::Tensor& boxes_a, const at::Tensor& boxes_b) {
  return pairwise_cuda<IouBevFn>(boxes_a, boxes_b);
}

at::Tensor boxes_iou_3d_cuda(const at::Tensor& boxes_a, const at::Tensor& boxes_b) {
  return pairwise_cuda<Iou3dFn>(boxes_a, boxes_b);
}

// grid (col_blocks, col_blocks), kNmsBlock threads; blocks below the diagonal return at once
// (the host pass never reads them). mask is [n, col_blocks].
__global__ void nms_mask_kernel(const float* __restrict__ boxes, int64_t n, int64_t col_blocks,
                                double iou_threshold, uint64_t* __restrict__ mask) {
  const int64_t row_block = blockIdx.y;
  const int64_t col_block = blockIdx.x;
  if (row_block > col_block) return;
  const int64_t row_size = min(n - row_block * kNmsBlock, static_cast<int64_t>(kNmsBlock));
  const int64_t col_size = min(n - col_block * kNmsBlock, static_cast<int64_t>(kNmsBlock));
  __shared__ BevGeom col_geom[kNmsBlock];
  if (threadIdx.x < col_size) {
    col_geom[threadIdx.x] = make_bev_geom(boxes + (col_block * kNmsBlock + threadIdx.x) * kBoxDim);
  }
  __syncthreads();
  if (threadIdx.x >= row_size) return;
  const int64_t i = row_block * kNmsBlock + threadIdx.x;
  const BevGeom geom_i = make_bev_geom(boxes + i * kBoxDim);
  const int start = row_block == col_block ? static_cast<int>(threadIdx.x) + 1 : 0;
  uint64_t bits = 0;
  for (int k = start; k < col_size; ++k) {
    if (iou_bev(geom_i, col_geom[k]) > iou_threshold) bits |= 1ULL << k;
  }
  mask[i * col_blocks + col_block] = bits;
}

at::Tensor nms_bev_cuda(const at::Tensor& boxes_in, const at::Tensor& scores_in,
                        double iou_threshold, std::optional<int64_t> pre_max_size,
                        std::optional<int64_t> post_max_size) {
  check_nms_args(boxes_in, scores_in, iou_threshold, pre_max_size, post_max_size);
  const c10::cuda::CUDAGuard device_guard(boxes_in.device());
  const int64_t n_all = boxes_in.size(0);
  const int64_t n = nms_candidates(n_all, pre_max_size);
  const int64_t max_keep = nms_max_keep(n_all, post_max_size);
  const at::TensorOptions long_opts = boxes_in.options().dtype(at::kLong);
  if (n == 0 || max_keep == 0) return at::empty({0}, long_opts);
  const at::Tensor order =
      std::get<1>(scores_in.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true)).narrow(0, 0, n);
  const at::Tensor sorted = boxes_in.index_select(0, order).contiguous();
  const int64_t col_blocks = (n + kNmsBlock - 1) / kNmsBlock;
  PD_CHECK_VALUE(col_blocks <= 65535, "nms_bev on CUDA takes at most ", 65535 * kNmsBlock,
                    " candidate boxes, got ", n, "; set pre_max_size");
  at::Tensor mask = at::empty({n, col_blocks}, long_opts);
  const dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>(col_blocks));
  nms_mask_kernel<<<grid, kNmsBlock, 0, c10::cuda::getCurrentCUDAStream()>>>(
      sorted.data_ptr<float>(), n, col_blocks, iou_threshold,
      reinterpret_cast<uint64_t*>(mask.data_ptr<int64_t>()));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const at::Tensor mask_host = mask.cpu();
  const uint64_t* mask_ptr = reinterpret_cast<const uint64_t*>(mask_host.data_ptr<int64_t>());
  std::vector<uint64_t> removed(col_blocks, 0);
  std::vector<int64_t> keep;
  keep.reserve(std::min(n, max_keep));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t block = i / kNmsBlock;
    if (removed[block] & (1ULL << (i % kNmsBlock))) continue;
    keep.push_back(i);
    if (static_cast<int64_t>(keep.size()) == max_keep) break;
    const uint64_t* row = mask_ptr + i * col_blocks;
    for (int64_t j = block; j < col_blocks; ++j) removed[j] |= row[j];
  }
  at::Tensor keep_host = at::empty({static_cast<int64_t>(keep.size())}, at::kLong);
  std::copy(keep.begin(), keep.end(), keep_host.data_ptr<int64_t>());
  return order.index_select(0, keep_host.to(boxes_in.device()));
}

}  // namespace
}  // namespace iou3d
}  // namespace pointdistiller

TORCH_LIBRARY_IMPL(pointdistiller, CUDA, m) {
  m.impl("boxes_overlap_bev", &pointdistiller::iou3d::boxes_overlap_bev_cuda);
  m.impl("boxes_iou_bev", &pointdistiller::iou3d::boxes_iou_bev_cuda);
  m.impl("boxes_iou_3d", &pointdistiller::iou3d::boxes_iou_3d_cuda);
  m.impl("nms_bev", &pointdistiller::iou3d::nms_bev_cuda);
}
