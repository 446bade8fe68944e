// CUDA kernels of pointdistiller::voxelize and voxelize_dynamic (contract in voxelize.h).
//
// Algorithm (same output as the CPU kernel, bit for bit, and deterministic):
//   1. one thread per point: the bit-packed cell key (see VoxelGrid) with the CPU's float32
//      arithmetic (__fsub_rn / __fdiv_rn, no contraction), or a sentinel above every key when out
//      of range; a flag for non-finite values;
//   2. stable radix sort of the keys (at::sort, stable): the points of a voxel become one segment,
//      in input order;
//   3. segment heads; the head's point is the voxel's first point, so an inclusive prefix sum of
//      "is the first point of its voxel" over the input order numbers voxels by first appearance;
//   4. one synchronisation to read the number of voxels (and the non-finite flag);
//   5. one thread per sorted point: its rank inside the segment is its rank in input order, so the
//      first max_points points are stored, exactly as on CPU.
// 32-bit keys when they need at most 30 bits (half the radix passes), else 64-bit.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <limits>

#include "voxelize/voxelize.h"

namespace pointdistiller {
namespace voxelize {
namespace {

constexpr int kThreads = 256;

inline unsigned int blocks_for(int64_t n) {
  return static_cast<unsigned int>((n + kThreads - 1) / kThreads);
}

struct DeviceGrid {
  float lo[3], size[3], upper[3];
  int by, bz;             // shifts of y and z in a key
  int64_t mask_x, mask_y;
};

DeviceGrid device_grid(const VoxelGrid& g) {
  DeviceGrid d;
  for (int k = 0; k < 3; ++k) {
    d.lo[k] = g.min[k];
    d.size[k] = g.size[k];
    d.upper[k] = g.upper[k];
  }
  d.by = g.bits[0];
  d.bz = g.bits[0] + g.bits[1];
  d.mask_x = (int64_t{1} << g.bits[0]) - 1;
  d.mask_y = (int64_t{1} << g.bits[1]) - 1;
  return d;
}

template <typename Key>
__device__ __forceinline__ void decode(Key key, const DeviceGrid& g, int32_t* zyx) {
  const int64_t k = static_cast<int64_t>(key);
  zyx[0] = static_cast<int32_t>(k >> g.bz);
  zyx[1] = static_cast<int32_t>((k >> g.by) & g.mask_y);
  zyx[2] = static_cast<int32_t>(k & g.mask_x);
}

// Step 1. keys[i] (sentinel when out of range); point_coords rows when not null.
template <typename Key>
__global__ void keys_kernel(const float* __restrict__ points, int64_t n, int64_t c,
                            DeviceGrid g, Key* __restrict__ keys,
                            int32_t* __restrict__ point_coords, int* __restrict__ bad) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const float* p = points + i * c;
  bool finite = true;
  for (int64_t k = 0; k < c; ++k) finite &= isfinite(p[k]);
  if (!finite) atomicOr(bad, 1);
  const float x = __fdiv_rn(__fsub_rn(p[0], g.lo[0]), g.size[0]);
  const float y = __fdiv_rn(__fsub_rn(p[1], g.lo[1]), g.size[1]);
  const float z = __fdiv_rn(__fsub_rn(p[2], g.lo[2]), g.size[2]);
  const bool in = x >= 0.f && x < g.upper[0] && y >= 0.f && y < g.upper[1] && z >= 0.f &&
                  z < g.upper[2];
  int32_t cx = -1, cy = -1, cz = -1;
  if (in) {
    cx = static_cast<int32_t>(x);
    cy = static_cast<int32_t>(y);
    cz = static_cast<int32_t>(z);
    keys[i] = static_cast<Key>((static_cast<int64_t>(cz) << g.bz) |
                               (static_cast<int64_t>(cy) << g.by) | cx);
  } else {
    keys[i] = std::numeric_limits<Key>::max();
  }
  if (point_coords != nullptr) {
    point_coords[3 * i] = cz;
    point_coords[3 * i + 1] = cy;
    point_coords[3 * i + 2] = cx;
  }
}

// Step 3. head[i] = sorted position i starts a voxel; is_first[point] = point is its voxel's first.
template <typename Key>
__global__ void heads_kernel(const Key* __restrict__ sorted, const int64_t* __restrict__ order,
                             int64_t n, int32_t* __restrict__ head,
                             int32_t* __restrict__ is_first) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const Key key = sorted[i];
  const bool h = key != std::numeric_limits<Key>::max() && (i == 0 || sorted[i - 1] != key);
  head[i] = h;
  if (h) is_first[order[i]] = 1;
}

// seg_start[segment] = sorted position of its head (segment = inclusive head count - 1).
__global__ void segment_starts_kernel(const int32_t* __restrict__ head,
                                      const int32_t* __restrict__ segment, int64_t n,
                                      int32_t* __restrict__ seg_start) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n || !head[i]) return;
  seg_start[segment[i] - 1] = static_cast<int32_t>(i);
}

struct Segments {
  at::Tensor sorted, order, segment, seg_start, rank;  // rank: inclusive count of first points
};

// Steps 1-3; returns the segments, and total voxels and the non-finite flag read back at once.
template <typename Key>
Segments sort_into_segments(const at::Tensor& points, const DeviceGrid& g,
                            int32_t* point_coords, int64_t* total, bool* bad) {
  const int64_t n = points.size(0), c = points.size(1);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const auto key_type = sizeof(Key) == 4 ? at::kInt : at::kLong;
  at::Tensor keys = at::empty({n}, points.options().dtype(key_type));
  at::Tensor flag = at::zeros({1}, points.options().dtype(at::kInt));
  keys_kernel<Key><<<blocks_for(n), kThreads, 0, stream>>>(
      points.data_ptr<float>(), n, c, g, keys.data_ptr<Key>(), point_coords,
      flag.data_ptr<int>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  Segments s;
  std::tie(s.sorted, s.order) = at::sort(keys, /*stable=*/true, /*dim=*/0, /*descending=*/false);
  at::Tensor head = at::empty({n}, points.options().dtype(at::kInt));
  at::Tensor is_first = at::zeros({n}, points.options().dtype(at::kInt));
  heads_kernel<Key><<<blocks_for(n), kThreads, 0, stream>>>(
      s.sorted.data_ptr<Key>(), s.order.data_ptr<int64_t>(), n, head.data_ptr<int32_t>(),
      is_first.data_ptr<int32_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  s.segment = at::cumsum(head, 0, at::kInt);
  s.rank = at::cumsum(is_first, 0, at::kInt);
  s.seg_start = at::empty({n}, points.options().dtype(at::kInt));
  segment_starts_kernel<<<blocks_for(n), kThreads, 0, stream>>>(
      head.data_ptr<int32_t>(), s.segment.data_ptr<int32_t>(), n, s.seg_start.data_ptr<int32_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  const at::Tensor host = at::cat({s.rank.narrow(0, n - 1, 1), flag}).cpu();
  *total = host.data_ptr<int32_t>()[0];
  *bad = host.data_ptr<int32_t>()[1] != 0;
  return s;
}

// Step 5, hard voxels: one thread per sorted position.
template <typename Key>
__global__ void fill_hard_kernel(const float* __restrict__ points, int64_t c,
                                 const Key* __restrict__ sorted,
                                 const int64_t* __restrict__ order,
                                 const int32_t* __restrict__ segment,
                                 const int32_t* __restrict__ seg_start,
                                 const int32_t* __restrict__ rank, int64_t n, int64_t m,
                                 int64_t max_points, DeviceGrid g, float* __restrict__ voxels,
                                 int32_t* __restrict__ coords, int32_t* __restrict__ num_points,
                                 int64_t* __restrict__ point_to_voxel) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const int64_t point = order[i];
  const Key key = sorted[i];
  if (key == std::numeric_limits<Key>::max()) {
    point_to_voxel[point] = -1;
    return;
  }
  const int64_t start = seg_start[segment[i] - 1];
  const int64_t voxel = rank[order[start]] - 1;
  if (voxel >= m) {
    point_to_voxel[point] = -1;
    return;
  }
  point_to_voxel[point] = voxel;
  const int64_t row = i - start;
  if (row < max_points) {
    const float* from = points + point * c;
    float* to = voxels + (voxel * max_points + row) * c;
    for (int64_t k = 0; k < c; ++k) to[k] = from[k];
  }
  if (row == 0) decode(key, g, coords + 3 * voxel);
  if (i == n - 1 || sorted[i + 1] != key) {
    num_points[voxel] = static_cast<int32_t>(row + 1 < max_points ? row + 1 : max_points);
  }
}

// Step 5, dynamic voxels.
template <typename Key>
__global__ void fill_dynamic_kernel(const Key* __restrict__ sorted,
                                    const int64_t* __restrict__ order,
                                    const int32_t* __restrict__ segment,
                                    const int32_t* __restrict__ seg_start,
                                    const int32_t* __restrict__ rank, int64_t n, DeviceGrid g,
                                    int32_t* __restrict__ voxel_coords,
                                    int64_t* __restrict__ point_to_voxel) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const int64_t point = order[i];
  const Key key = sorted[i];
  if (key == std::numeric_limits<Key>::max()) {
    point_to_voxel[point] = -1;
    return;
  }
  const int64_t start = seg_start[segment[i] - 1];
  const int64_t voxel = rank[order[start]] - 1;
  point_to_voxel[point] = voxel;
  if (i == start) decode(key, g, voxel_coords + 3 * voxel);
}

bool small_keys(const VoxelGrid& g) { return g.key_bits() <= kSmallKeyBits; }

template <typename Key>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> voxelize_impl(
    const at::Tensor& points, const VoxelGrid& grid, int64_t max_points, int64_t max_voxels) {
  const int64_t n = points.size(0), c = points.size(1);
  const DeviceGrid g = device_grid(grid);
  int64_t total = 0;
  bool bad = false;
  Segments s = sort_into_segments<Key>(points, g, nullptr, &total, &bad);
  if (bad) throw_non_finite(points);
  const int64_t m = std::min(total, max_voxels);
  at::Tensor voxels = at::zeros({m, max_points, c}, points.options());
  at::Tensor coords = at::empty({m, 3}, points.options().dtype(at::kInt));
  at::Tensor num_points = at::empty({m}, points.options().dtype(at::kInt));
  at::Tensor point_to_voxel = at::empty({n}, points.options().dtype(at::kLong));
  fill_hard_kernel<Key><<<blocks_for(n), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      points.data_ptr<float>(), c, s.sorted.data_ptr<Key>(), s.order.data_ptr<int64_t>(),
      s.segment.data_ptr<int32_t>(), s.seg_start.data_ptr<int32_t>(), s.rank.data_ptr<int32_t>(),
      n, m, max_points, g, voxels.data_ptr<float>(), coords.data_ptr<int32_t>(),
      num_points.data_ptr<int32_t>(), point_to_voxel.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {voxels, coords, num_points, point_to_voxel};
}

template <typename Key>
std::tuple<at::Tensor, at::Tensor, at::Tensor> voxelize_dynamic_impl(const at::Tensor& points,
                                                                     const VoxelGrid& grid) {
  const int64_t n = points.size(0);
  const DeviceGrid g = device_grid(grid);
  at::Tensor point_coords = at::empty({n, 3}, points.options().dtype(at::kInt));
  int64_t total = 0;
  bool bad = false;
  Segments s = sort_into_segments<Key>(points, g, point_coords.data_ptr<int32_t>(), &total, &bad);
  if (bad) throw_non_finite(points);
  at::Tensor voxel_coords = at::empty({total, 3}, points.options().dtype(at::kInt));
  at::Tensor point_to_voxel = at::empty({n}, points.options().dtype(at::kLong));
  fill_dynamic_kernel<Key><<<blocks_for(n), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      s.sorted.data_ptr<Key>(), s.order.data_ptr<int64_t>(), s.segment.data_ptr<int32_t>(),
      s.seg_start.data_ptr<int32_t>(), s.rank.data_ptr<int32_t>(), n, g,
      voxel_coords.data_ptr<int32_t>(), point_to_voxel.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {point_coords, voxel_coords, point_to_voxel};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> voxelize_cuda(
    const at::Tensor& points, c10::ArrayRef<double> voxel_size,
    c10::ArrayRef<double> point_range, int64_t max_points, int64_t max_voxels) {
  const VoxelGrid grid = make_grid(points, voxel_size, point_range);
  check_limits(max_points, max_voxels);
  const c10::cuda::CUDAGuard device_guard(points.device());
  const at::Tensor pts = points.contiguous();
  if (pts.size(0) == 0) {
    return {at::zeros({0, max_points, pts.size(1)}, pts.options()),
            at::empty({0, 3}, pts.options().dtype(at::kInt)),
            at::empty({0}, pts.options().dtype(at::kInt)),
            at::empty({0}, pts.options().dtype(at::kLong))};
  }
  return small_keys(grid) ? voxelize_impl<int32_t>(pts, grid, max_points, max_voxels)
                          : voxelize_impl<int64_t>(pts, grid, max_points, max_voxels);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> voxelize_dynamic_cuda(
    const at::Tensor& points, c10::ArrayRef<double> voxel_size,
    c10::ArrayRef<double> point_range) {
  const VoxelGrid grid = make_grid(points, voxel_size, point_range);
  const c10::cuda::CUDAGuard device_guard(points.device());
  const at::Tensor pts = points.contiguous();
  if (pts.size(0) == 0) {
    return {at::empty({0, 3}, pts.options().dtype(at::kInt)),
            at::empty({0, 3}, pts.options().dtype(at::kInt)),
            at::empty({0}, pts.options().dtype(at::kLong))};
  }
  return small_keys(grid) ? voxelize_dynamic_impl<int32_t>(pts, grid)
                          : voxelize_dynamic_impl<int64_t>(pts, grid);
}

}  // namespace
}  // namespace voxelize
}  // namespace pointdistiller

TORCH_LIBRARY_IMPL(pointdistiller, CUDA, m) {
  m.impl("voxelize", &pointdistiller::voxelize::voxelize_cuda);
  m.impl("voxelize_dynamic", &pointdistiller::voxelize::voxelize_dynamic_cuda);
}
