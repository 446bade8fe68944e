// Segment reduction of point features into voxels (dynamic voxel feature encoders).
//
// Contract (identical on CPU and CUDA, bit for bit, every run):
//
// scatter_reduce(features [N, C] float32 or float64, index [N] int64 with values in
//                [-1, num_segments) (-1: point skipped), num_segments >= 0, reduce "mean" | "max")
//   -> out [num_segments, C], dtype of features; 0 for segments with no point
//      aux  mean: counts [num_segments] int64, points per segment
//           max:  argmax [num_segments, C] int64, the point giving each maximum, -1 when empty
//
// mean: sum in the feature dtype over the segment's points in input order, then one division
//       by the count.
// max:  the first point (lowest index) holding the largest value; NaN wins over numbers (the
//       first NaN), as torch.max propagates NaN.
// The gradient is not computed here: the Python wrapper registers it with torch ops from aux
// (mean: grad / count gathered back; max: grad to the arg-max point).
//
// CPU: one pass in input order, parallel over channel ranges (each channel's order fixed).
// CUDA: stable sort of index, segment bounds, one thread per (segment, channel) walking its
// segment in input order.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <cstdint>
#include <string>

namespace pointdistiller {
namespace scatter {

enum class Reduce { kMean, kMax };

// Checks features (float32/float64, [N, C]), index (int64, [N], same device), num_segments >= 0
// and reduce; returns the reduction. Errors name the argument. Values of index are checked by the
// kernels.
Reduce check_args(const at::Tensor& features, const at::Tensor& index, int64_t num_segments,
                  c10::string_view reduce);

// ValueError for an index value outside [-1, num_segments).
[[noreturn]] void throw_bad_index(int64_t position, int64_t value, int64_t num_segments);

}  // namespace scatter
}  // namespace pointdistiller
