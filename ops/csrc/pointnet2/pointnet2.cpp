// Schemas of the PointNet++ ops (contracts in pointnet2.h) and the argument checks shared by their
// CPU and CUDA kernels.
#include "common/check.h"
#include "pointnet2/pointnet2.h"

#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>

namespace pointdistiller {
namespace pointnet2 {
namespace {

void check_same_device(const at::Tensor& t, const at::Tensor& like, const char* op,
                       const char* name) {
  PD_CHECK_VALUE(t.device() == like.device(), op, ": ", name, " is on ", t.device(),
                 " but the points are on ", like.device());
}

}  // namespace

void check_points(const at::Tensor& points, const char* op, const char* name) {
  PD_CHECK_TYPE(points.scalar_type() == at::kFloat, op, ": ", name, " must be float32, got ",
                points.scalar_type());
  PD_CHECK_VALUE(points.dim() == 2 && points.size(1) == 3, op, ": ", name,
                 " must have shape [N, 3], got ", points.sizes());
}

void check_offsets(const at::Tensor& offsets, int64_t rows, const at::Tensor& like, const char* op,
                   const char* name) {
  PD_CHECK_TYPE(offsets.scalar_type() == at::kLong, op, ": ", name, " must be int64, got ",
                offsets.scalar_type());
  PD_CHECK_VALUE(offsets.dim() == 1 && offsets.numel() >= 2, op, ": ", name,
                 " must be [B + 1] with B >= 1, got shape ", offsets.sizes());
  check_same_device(offsets, like, op, name);
  const at::Tensor o = offsets.cpu();
  const int64_t* p = o.data_ptr<int64_t>();
  PD_CHECK_VALUE(p[0] == 0 && p[o.numel() - 1] == rows, op, ": ", name, " must start at 0 and end at ",
                 rows, ", got ", p[0], " ... ", p[o.numel() - 1]);
  for (int64_t i = 1; i < o.numel(); ++i) {
    PD_CHECK_VALUE(p[i] >= p[i - 1], op, ": ", name, " must be non-decreasing, but ", name, "[", i,
                   "] = ", p[i], " < ", p[i - 1]);
  }
}

void check_boxes(const at::Tensor& boxes, const at::Tensor& like, const char* op) {
  PD_CHECK_TYPE(boxes.scalar_type() == at::kFloat, op, ": boxes must be float32, got ",
                boxes.scalar_type());
  PD_CHECK_VALUE(boxes.dim() == 2 && boxes.size(1) == 7, op, ": boxes must have shape [R, 7], got ",
                 boxes.sizes());
  check_same_device(boxes, like, op, "boxes");
}

void check_fps_args(const at::Tensor& points, const at::Tensor& offsets, const at::Tensor& counts) {
  constexpr const char* op = "furthest_point_sample";
  check_points(points, op);
  check_offsets(offsets, points.size(0), points, op, "offsets");
  PD_CHECK_TYPE(counts.scalar_type() == at::kLong, op, ": counts must be int64, got ",
                counts.scalar_type());
  PD_CHECK_VALUE(counts.dim() == 1 && counts.numel() == offsets.numel() - 1, op,
                 ": counts must be [B] with B = offsets.numel() - 1 = ", offsets.numel() - 1,
                 ", got shape ", counts.sizes());
  check_same_device(counts, points, op, "counts");
  const at::Tensor o = offsets.cpu(), c = counts.cpu();
  for (int64_t b = 0; b < c.numel(); ++b) {
    const int64_t n = o.data_ptr<int64_t>()[b + 1] - o.data_ptr<int64_t>()[b];
    const int64_t k = c.data_ptr<int64_t>()[b];
    PD_CHECK_VALUE(k >= 0 && k <= n, op, ": counts[", b, "] = ", k, " but sample ", b, " has ", n,
                   " points (0 <= counts[b] <= points of sample b)");
  }
}

void check_ball_query_args(const at::Tensor& points, const at::Tensor& offsets,
                           const at::Tensor& centers, const at::Tensor& center_offsets,
                           double radius, int64_t nsample) {
  constexpr const char* op = "ball_query";
  check_points(points, op);
  check_points(centers, op, "centers");
  check_same_device(centers, points, op, "centers");
  check_offsets(offsets, points.size(0), points, op, "offsets");
  check_offsets(center_offsets, centers.size(0), points, op, "center_offsets");
  PD_CHECK_VALUE(offsets.numel() == center_offsets.numel(), op,
                 ": offsets and center_offsets must have the same length, got ", offsets.numel(),
                 " and ", center_offsets.numel());
  PD_CHECK_VALUE(std::isfinite(radius) && radius > 0, op, ": radius must be finite and > 0, got ",
                 radius);
  PD_CHECK_VALUE(nsample >= 1, op, ": nsample must be >= 1, got ", nsample);
  const at::Tensor o = offsets.cpu(), co = center_offsets.cpu();
  for (int64_t b = 0; b + 1 < o.numel(); ++b) {
    const bool has_centers = co.data_ptr<int64_t>()[b + 1] > co.data_ptr<int64_t>()[b];
    const bool has_points = o.data_ptr<int64_t>()[b + 1] > o.data_ptr<int64_t>()[b];
    PD_CHECK_VALUE(!has_centers || has_points, op, ": sample ", b,
                   " has centers but no points to query");
  }
}

void check_index(const at::Tensor& idx, int64_t num_rows, const at::Tensor& like, const char* op,
                 int64_t width) {
  PD_CHECK_TYPE(idx.scalar_type() == at::kLong, op, ": idx must be int64, got ", idx.scalar_type());
  PD_CHECK_VALUE(idx.dim() == 2 && (width < 0 || idx.size(1) == width), op, ": idx must be [M, ",
                 width < 0 ? "K" : std::to_string(width), "], got shape ", idx.sizes());
  check_same_device(idx, like, op, "idx");
  if (idx.numel() == 0) return;
  const auto mm = at::aminmax(idx);
  const int64_t lo = std::get<0>(mm).item<int64_t>(), hi = std::get<1>(mm).item<int64_t>();
  PD_CHECK_VALUE(lo >= 0 && hi < num_rows, op, ": idx holds row ", lo < 0 ? lo : hi,
                 " outside [0, ", num_rows, ")");
}

void check_group_args(const at::Tensor& features, const at::Tensor& idx) {
  constexpr const char* op = "group_points";
  PD_CHECK_TYPE(features.scalar_type() == at::kFloat, op, ": features must be float32, got ",
                features.scalar_type());
  PD_CHECK_VALUE(features.dim() == 2, op, ": features must be [N, C], got shape ", features.sizes());
  check_index(idx, features.size(0), features, op);
}

void check_three_interpolate_args(const at::Tensor& features, const at::Tensor& idx,
                                  const at::Tensor& weight) {
  constexpr const char* op = "three_interpolate";
  PD_CHECK_TYPE(features.scalar_type() == at::kFloat, op, ": features must be float32, got ",
                features.scalar_type());
  PD_CHECK_VALUE(features.dim() == 2, op, ": features must be [M, C], got shape ", features.sizes());
  check_index(idx, features.size(0), features, op, 3);
  PD_CHECK_TYPE(weight.scalar_type() == at::kFloat, op, ": weight must be float32, got ",
                weight.scalar_type());
  PD_CHECK_VALUE(weight.sizes() == idx.sizes(), op, ": weight must have the shape of idx ",
                 idx.sizes(), ", got ", weight.sizes());
  check_same_device(weight, features, op, "weight");
}

void check_roipool_args(const at::Tensor& points, const at::Tensor& features,
                        const at::Tensor& offsets, const at::Tensor& boxes,
                        const at::Tensor& box_offsets, int64_t num_sampled) {
  constexpr const char* op = "roipoint_pool3d";
  check_points(points, op);
  PD_CHECK_TYPE(features.scalar_type() == at::kFloat, op, ": features must be float32, got ",
                features.scalar_type());
  PD_CHECK_VALUE(features.dim() == 2 && features.size(0) == points.size(0), op,
                 ": features must be [N, C] with N = points.shape[0] = ", points.size(0),
                 ", got shape ", features.sizes());
  check_same_device(features, points, op, "features");
  check_boxes(boxes, points, op);
  check_offsets(offsets, points.size(0), points, op, "offsets");
  check_offsets(box_offsets, boxes.size(0), points, op, "box_offsets");
  PD_CHECK_VALUE(offsets.numel() == box_offsets.numel(), op,
                 ": offsets and box_offsets must have the same length");
  PD_CHECK_VALUE(num_sampled >= 1, op, ": num_sampled must be >= 1, got ", num_sampled);
}

}  // namespace pointnet2
}  // namespace pointdistiller

TORCH_LIBRARY_FRAGMENT(pointdistiller, m) {
  m.def("furthest_point_sample(Tensor points, Tensor offsets, Tensor counts) -> Tensor");
  m.def(
      "ball_query(Tensor points, Tensor offsets, Tensor centers, Tensor center_offsets, "
      "float radius, int nsample) -> (Tensor, Tensor)");
  m.def("group_points(Tensor features, Tensor idx) -> Tensor");
  m.def("group_points_backward(Tensor grad, Tensor idx, SymInt num_rows) -> Tensor");
  m.def("three_interpolate(Tensor features, Tensor idx, Tensor weight) -> Tensor");
  m.def(
      "three_interpolate_backward(Tensor grad, Tensor idx, Tensor weight, SymInt num_rows) -> "
      "Tensor");
  m.def("points_in_boxes(Tensor points, Tensor offsets, Tensor boxes, Tensor box_offsets) -> Tensor");
  m.def(
      "roipoint_pool3d(Tensor points, Tensor features, Tensor offsets, Tensor boxes, "
      "Tensor box_offsets, int num_sampled) -> (Tensor, Tensor)");
}
