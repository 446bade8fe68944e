// Schemas of the iou3d ops and the argument checks shared by their CPU and CUDA kernels.
#include "common/check.h"
#include "iou3d/iou3d.h"

#include <torch/library.h>

namespace pointdistiller {
namespace iou3d {

void check_boxes(const at::Tensor& boxes, const char* name) {
  PD_CHECK_VALUE(boxes.dim() == 2 && boxes.size(1) == 7, name,
                    " must have shape [*, 7] = (x, y, z, l, w, h, yaw), got ", boxes.sizes());
  PD_CHECK_TYPE(boxes.scalar_type() == at::kFloat, name, " must be float32, got ",
                   boxes.scalar_type());
}

void check_box_pair(const at::Tensor& boxes_a, const at::Tensor& boxes_b) {
  check_boxes(boxes_a, "boxes_a");
  check_boxes(boxes_b, "boxes_b");
  PD_CHECK_VALUE(boxes_a.device() == boxes_b.device(),
                    "boxes_a and boxes_b must be on the same device, got ", boxes_a.device(),
                    " and ", boxes_b.device());
}

void check_nms_args(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold,
                    std::optional<int64_t> pre_max_size, std::optional<int64_t> post_max_size) {
  check_boxes(boxes, "boxes");
  PD_CHECK_VALUE(scores.dim() == 1 && scores.size(0) == boxes.size(0),
                    "scores must have shape [N] with N = boxes.size(0) = ", boxes.size(0), ", got ",
                    scores.sizes());
  PD_CHECK_TYPE(scores.scalar_type() == at::kFloat, "scores must be float32, got ",
                   scores.scalar_type());
  PD_CHECK_VALUE(scores.device() == boxes.device(),
                    "scores must be on the device of boxes (", boxes.device(), "), got ",
                    scores.device());
  PD_CHECK_VALUE(iou_threshold >= 0.0, "iou_threshold must be >= 0, got ", iou_threshold);
  PD_CHECK_VALUE(!pre_max_size.has_value() || *pre_max_size >= 0,
                    "pre_max_size must be >= 0 or None, got ", *pre_max_size);
  PD_CHECK_VALUE(!post_max_size.has_value() || *post_max_size >= 0,
                    "post_max_size must be >= 0 or None, got ", *post_max_size);
}

}  // namespace iou3d
}  // namespace pointdistiller

TORCH_LIBRARY_FRAGMENT(pointdistiller, m) {
  m.def("boxes_overlap_bev(Tensor boxes_a, Tensor boxes_b) -> Tensor");
  m.def("boxes_iou_bev(Tensor boxes_a, Tensor boxes_b) -> Tensor");
  m.def("boxes_iou_3d(Tensor boxes_a, Tensor boxes_b) -> Tensor");
  m.def(
      "nms_bev(Tensor boxes, Tensor scores, float iou_threshold, int? pre_max_size=None, "
      "int? post_max_size=None) -> Tensor");
}
