// PointNet++ ops of ragged batches (PointRCNN's backbone, stage-1 targets and stage-2 pooling).
//
// Batches are ragged: a tensor of rows of all samples plus int64 offsets [B + 1] (offsets[0] == 0,
// non-decreasing, offsets[B] == rows); sample b owns rows offsets[b]:offsets[b + 1]. Every index
// an op returns is a global row index. All kernels are deterministic: CPU and CUDA return the same
// indices on every run (float results may differ in the last bits where noted).
//
// Squared distance (every kernel and the reference, like knn):
//   d2(p, q) = (p0 - q0)^2 + (p1 - q1)^2 + (p2 - q2)^2 in float32, left to right, each subtraction,
//   product and sum rounded separately (no fused multiply-add).
//
// furthest_point_sample(points [N, 3] f32, offsets [B + 1] i64, counts [B] i64) -> idx [S] i64
//   S = sum(counts); counts[b] <= rows of sample b. Distance-based FPS per sample: the first pick
//   is the sample's first row; each next pick is the row with the largest min-d2 to the rows
//   picked so far, ties to the lowest index. Output sample-major, in pick order.
//
// ball_query(points [N, 3] f32, offsets [B + 1] i64, centers [M, 3] f32, center_offsets [B + 1]
//            i64, radius f64, nsample i64) -> (idx [M, nsample] i64, count [M] i64)
//   For each center of sample b: the first nsample rows of sample b in index order with
//   d2 < r2, r2 = float(radius) * float(radius) in float32; the remaining slots repeat the first
//   row found (the PointNet++ convention). count = rows found (<= nsample). No row found: every
//   slot holds offsets[b] (the sample's first row), count 0. A sample with centers and no rows is
//   an error.
//
// group_points(features [N, C] f32, idx [M, K] i64) -> out [M, C, K] f32
//   out[m, c, k] = features[idx[m, k], c]. Rows outside [0, N) are an error.
// group_points_backward(grad [M, C, K] f32, idx [M, K] i64, num_rows) -> [num_rows, C] f32
//   The sum of grad over every (m, k) with idx[m, k] == row. CPU: summed in (m, k) order, so the
//   result is deterministic; CUDA: atomics (order, and the last bits, may vary).
//
// three_interpolate(features [M, C] f32, idx [N, 3] i64, weight [N, 3] f32) -> out [N, C] f32
//   out[n, c] = ((w0 f[i0, c] + w1 f[i1, c]) + w2 f[i2, c]), products and sums rounded separately.
// three_interpolate_backward(grad [N, C] f32, idx [N, 3] i64, weight [N, 3] f32, num_rows)
//   -> [num_rows, C] f32: sum over (n, j) with idx[n, j] == row of w[n, j] * grad[n, c]; CPU in
//   (n, j) order (deterministic); CUDA atomics.
//   (three_nn is pointdistiller.ops.knn with k = 3.)
//
// Point in box (roipoint_pool3d, points_in_boxes), LiDAR boxes (x, y, z_centre, l, w, h, yaw),
// evaluated in float64 without fused multiply-add, borders included (as
// kitti_tools.geometry.points_in_boxes):
//   dx = p0 - x, dy = p1 - y, dz = p2 - z;  lx = dx cos(yaw) + dy sin(yaw);
//   ly = -dx sin(yaw) + dy cos(yaw);  inside iff |lx| <= l / 2, |ly| <= w / 2, |dz| <= h / 2.
//
// points_in_boxes(points [N, 3] f32, offsets [B + 1] i64, boxes [R, 7] f32, box_offsets [B + 1] i64)
//   -> box [N] i64: the lowest global box index of the point's sample that contains it, -1 if none.
//
// roipoint_pool3d(points [N, 3] f32, features [N, C] f32, offsets [B + 1] i64, boxes [R, 7] f32,
//                 box_offsets [B + 1] i64, num_sampled i64)
//   -> (pooled [R, num_sampled, 3 + C] f32, empty [R] bool)
//   For each box of sample b, the rows of sample b inside it in index order, i_0 < i_1 < ...
//   (n of them); slot s holds row i_(s mod n): its xyz then its features. n == 0: zeros and
//   empty = true.
#pragma once

#include <ATen/core/Tensor.h>

#include <cmath>
#include <cstdint>

namespace pointdistiller {
namespace pointnet2 {

// Checks shared by the CPU and CUDA kernels (ValueError naming the argument, common/check.h).
void check_points(const at::Tensor& points, const char* op, const char* name = "points");
void check_offsets(const at::Tensor& offsets, int64_t rows, const at::Tensor& like, const char* op,
                   const char* name);
void check_boxes(const at::Tensor& boxes, const at::Tensor& like, const char* op);
void check_fps_args(const at::Tensor& points, const at::Tensor& offsets, const at::Tensor& counts);
void check_ball_query_args(const at::Tensor& points, const at::Tensor& offsets,
                           const at::Tensor& centers, const at::Tensor& center_offsets,
                           double radius, int64_t nsample);
void check_index(const at::Tensor& idx, int64_t num_rows, const at::Tensor& like, const char* op,
                 int64_t width = -1);
void check_group_args(const at::Tensor& features, const at::Tensor& idx);
void check_three_interpolate_args(const at::Tensor& features, const at::Tensor& idx,
                                  const at::Tensor& weight);
void check_roipool_args(const at::Tensor& points, const at::Tensor& features,
                        const at::Tensor& offsets, const at::Tensor& boxes,
                        const at::Tensor& box_offsets, int64_t num_sampled);

// Float32 squared distance of the contract. The CPU sources are compiled without FMA instructions
// (no -mfma, no -march), so the compiler cannot contract; CUDA rounds each step explicitly.
#if defined(__CUDACC__)
__host__ __device__ __forceinline__
#else
inline
#endif
float dist2(const float* p, const float* q) {
#if defined(__CUDA_ARCH__)
  const float dx = __fsub_rn(p[0], q[0]), dy = __fsub_rn(p[1], q[1]), dz = __fsub_rn(p[2], q[2]);
  return __fadd_rn(__fadd_rn(__fmul_rn(dx, dx), __fmul_rn(dy, dy)), __fmul_rn(dz, dz));
#else
  const float dx = p[0] - q[0], dy = p[1] - q[1], dz = p[2] - q[2];
  return (dx * dx + dy * dy) + dz * dz;
#endif
}

// Whether point p lies in LiDAR box b (x, y, z_centre, l, w, h, yaw), in float64 as the contract
// says; cos/sin of the box's yaw are passed in (computed once per box).
#if defined(__CUDACC__)
__host__ __device__ __forceinline__
#else
inline
#endif
bool in_box(const float* p, const float* b, double c, double s) {
#if defined(__CUDA_ARCH__)
  const double dx = __dsub_rn(static_cast<double>(p[0]), static_cast<double>(b[0]));
  const double dy = __dsub_rn(static_cast<double>(p[1]), static_cast<double>(b[1]));
  const double dz = __dsub_rn(static_cast<double>(p[2]), static_cast<double>(b[2]));
  const double lx = __dadd_rn(__dmul_rn(dx, c), __dmul_rn(dy, s));
  const double ly = __dadd_rn(__dmul_rn(-dx, s), __dmul_rn(dy, c));
#else
  const double dx = static_cast<double>(p[0]) - static_cast<double>(b[0]);
  const double dy = static_cast<double>(p[1]) - static_cast<double>(b[1]);
  const double dz = static_cast<double>(p[2]) - static_cast<double>(b[2]);
  const double lx = dx * c + dy * s;
  const double ly = -dx * s + dy * c;
#endif
  return fabs(lx) <= 0.5 * static_cast<double>(b[3]) && fabs(ly) <= 0.5 * static_cast<double>(b[4]) &&
         fabs(dz) <= 0.5 * static_cast<double>(b[5]);
}

}  // namespace pointnet2
}  // namespace pointdistiller
