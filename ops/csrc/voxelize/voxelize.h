// Point-cloud voxelization: hard voxels with a point cap (PointPillars / SECOND input) and
// dynamic voxels (every in-range point keeps its voxel).
//
// Contract (identical on CPU and CUDA, bit for bit, every run):
//
// voxelize(points [N, C] float32, C >= 3, columns x, y, z, extra features...;
//          voxel_size [3] (x, y, z), point_range [6] (xmin, ymin, zmin, xmax, ymax, zmax),
//          max_points >= 1, max_voxels >= 1)
//   -> voxels         [M, max_points, C] float32  points of each voxel, unused rows zero
//      coords         [M, 3] int32                voxel index as (z, y, x)
//      num_points     [M] int32                   points stored in the voxel, 1..max_points
//      point_to_voxel [N] int64                   voxel of each point, -1 if dropped
//
// voxelize_dynamic(points, voxel_size, point_range)
//   -> point_coords   [N, 3] int32 (z, y, x) of each point, a row of -1 when out of range
//      voxel_coords   [M, 3] int32 unique voxels
//      point_to_voxel [N] int64, -1 when out of range
//
// Quantisation (the rule of spconv's PointToVoxel on CPU, reproduced in float32 arithmetic):
//   grid[d] = round((max[d] - min[d]) / size[d])          float32 divide, round half away from 0
//   c[d]    = floor((p[d] - min[d]) / size[d])            float32 subtract and divide
//   a point is in range iff 0 <= c[d] < grid[d] for x, y and z. So `min` is included; `max` is
//   excluded when (max - min) / size is a whole number in float32, otherwise the last cell ends
//   at min + grid * size.
// Ordering: voxels are numbered by the first appearance of any of their points in input order.
// A voxel stores its first max_points points in input order; later points of a full voxel are not
// stored but keep point_to_voxel = their voxel (as spconv's pc_voxel_id does). Once max_voxels
// voxels exist, points of further new voxels get point_to_voxel = -1 and their voxels are dropped.
// Non-finite values anywhere in `points` are an error (ValueError naming `points`).
//
// CPU: one sequential pass over an open-addressing hash map (thread-local, reused across calls,
// sized by min(N, max_voxels), never by the grid); key computation and copies in parallel.
// CUDA: cell keys, stable radix sort, segment heads, prefix sums for first-appearance order.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <cstdint>

namespace pointdistiller {
namespace voxelize {

// Grid derived from voxel_size and point_range exactly as spconv derives it (float32).
struct VoxelGrid {
  float min[3];      // x, y, z lower corner (metres)
  float size[3];     // x, y, z voxel edge (metres)
  int64_t dims[3];   // x, y, z number of cells
  float upper[3];    // smallest float >= dims[d]: for any float q, q < dims[d] <=> q < upper[d]
  int bits[3];       // x, y, z bits of a cell index: the least b with dims[d] <= 2^b
  // A cell's key packs its index as z << (bits x + bits y) | y << bits x | x (decoded by shifts).
  int key_bits() const { return bits[0] + bits[1] + bits[2]; }
};

// Keys of at most this many bits are stored as 32-bit integers (faster sorts and hash maps).
constexpr int kSmallKeyBits = 30;

// Checks points (dtype float32, [N, C >= 3], N < 2^31), voxel_size (3 finite values > 0) and
// point_range (6 finite values, max > min, 1 to 2^30 cells per axis, keys of at most 62 bits)
// and returns the grid. Errors name the argument.
VoxelGrid make_grid(const at::Tensor& points, c10::ArrayRef<double> voxel_size,
                    c10::ArrayRef<double> point_range);

// Checks max_points >= 1 and max_voxels >= 1 (naming the argument).
void check_limits(int64_t max_points, int64_t max_voxels);

// Raises the ValueError for non-finite points, naming the first offending row (slow path).
[[noreturn]] void throw_non_finite(const at::Tensor& points);

}  // namespace voxelize
}  // namespace pointdistiller
