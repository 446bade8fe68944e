// Schemas of pointdistiller::voxelize / voxelize_dynamic and the argument checks shared by the CPU
// and CUDA kernels. The contract is in voxelize.h.
#include "common/check.h"
#include "voxelize/voxelize.h"

#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>
#include <limits>

namespace pointdistiller {
namespace voxelize {

namespace {
const char* const kAxis[3] = {"x", "y", "z"};
}

VoxelGrid make_grid(const at::Tensor& points, c10::ArrayRef<double> voxel_size,
                    c10::ArrayRef<double> point_range) {
  PD_CHECK_TYPE(points.scalar_type() == at::kFloat, "voxelize: points must be float32, got ",
                   points.scalar_type());
  PD_CHECK_VALUE(points.dim() == 2 && points.size(1) >= 3,
                    "voxelize: points must have shape [N, C] with C >= 3 (x, y, z, ...), got ",
                    points.sizes());
  PD_CHECK_VALUE(points.size(0) < std::numeric_limits<int32_t>::max(),
                    "voxelize: points has ", points.size(0), " rows; at most 2^31 - 2 supported");
  PD_CHECK_VALUE(voxel_size.size() == 3,
                    "voxelize: voxel_size must hold 3 values (x, y, z), got ", voxel_size.size());
  PD_CHECK_VALUE(point_range.size() == 6,
                    "voxelize: point_range must hold 6 values (xmin, ymin, zmin, xmax, ymax, "
                    "zmax), got ", point_range.size());
  VoxelGrid grid;
  for (int d = 0; d < 3; ++d) {
    // float32 like spconv, which receives these as std::vector<float>.
    const float size = static_cast<float>(voxel_size[d]);
    const float lo = static_cast<float>(point_range[d]);
    const float hi = static_cast<float>(point_range[d + 3]);
    PD_CHECK_VALUE(std::isfinite(size) && size > 0.f, "voxelize: voxel_size[", d, "] (",
                      kAxis[d], ") must be finite and > 0, got ", voxel_size[d]);
    PD_CHECK_VALUE(std::isfinite(lo) && std::isfinite(hi),
                      "voxelize: point_range must be finite, got ", point_range);
    PD_CHECK_VALUE(hi > lo, "voxelize: point_range ", kAxis[d], "max (", point_range[d + 3],
                      ") must be greater than ", kAxis[d], "min (", point_range[d], ")");
    const float cells_f = std::round((hi - lo) / size);
    PD_CHECK_VALUE(cells_f >= 1.f && cells_f <= 1073741824.f,
                      "voxelize: point_range and voxel_size give ", cells_f, " cells along ",
                      kAxis[d], "; need 1 to 2^30");
    grid.min[d] = lo;
    grid.size[d] = size;
    grid.dims[d] = static_cast<int64_t>(cells_f);
    grid.upper[d] = static_cast<float>(grid.dims[d]);
    if (static_cast<double>(grid.upper[d]) < static_cast<double>(grid.dims[d])) {
      grid.upper[d] = std::nextafter(grid.upper[d], INFINITY);
    }
    grid.bits[d] = 0;
    while ((int64_t{1} << grid.bits[d]) < grid.dims[d]) ++grid.bits[d];
  }
  PD_CHECK_VALUE(grid.key_bits() <= 62, "voxelize: the grid (", grid.dims[0], " x ",
                    grid.dims[1], " x ", grid.dims[2], " cells) needs ", grid.key_bits(),
                    " bits of cell index, more than 62; use larger voxels or a smaller range");
  return grid;
}

void check_limits(int64_t max_points, int64_t max_voxels) {
  PD_CHECK_VALUE(max_points >= 1 && max_points <= std::numeric_limits<int32_t>::max(),
                    "voxelize: max_points must be >= 1, got ", max_points);
  PD_CHECK_VALUE(max_voxels >= 1 && max_voxels <= std::numeric_limits<int32_t>::max(),
                    "voxelize: max_voxels must be >= 1, got ", max_voxels);
}

void throw_non_finite(const at::Tensor& points) {
  const at::Tensor bad_rows = at::logical_not(at::isfinite(points)).any(1).nonzero();
  const int64_t row = bad_rows.numel() > 0 ? bad_rows[0][0].item<int64_t>() : -1;
  PD_CHECK_VALUE(false, "voxelize: points must be finite, but row ", row,
                    " holds NaN or inf");
}

}  // namespace voxelize
}  // namespace pointdistiller

TORCH_LIBRARY_FRAGMENT(pointdistiller, m) {
  m.def(
      "voxelize(Tensor points, float[] voxel_size, float[] point_range, int max_points, "
      "int max_voxels) -> (Tensor voxels, Tensor coords, Tensor num_points, "
      "Tensor point_to_voxel)");
  m.def(
      "voxelize_dynamic(Tensor points, float[] voxel_size, float[] point_range) -> "
      "(Tensor point_coords, Tensor voxel_coords, Tensor point_to_voxel)");
}
