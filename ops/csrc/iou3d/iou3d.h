// Rotated BEV IoU, 3D IoU and rotated NMS of LiDAR boxes (pointdistiller::boxes_* / nms_bev).
//
// Contract
//   Boxes are float32 [*, 7] = (x, y, z_centre, l, w, h, yaw) in metres / radians, yaw about +z and
//   l along +x at yaw 0. All tensors of one call live on the same device (CPU or CUDA). Inputs must
//   be finite with l, w, h >= 0 (the Python wrappers check values; the C++ checks cover shapes,
//   dtypes and devices). Non-contiguous inputs are accepted (copied).
//
//   boxes_overlap_bev(a [N, 7], b [M, 7]) -> [N, M] float32: BEV intersection area (m^2).
//   boxes_iou_bev(a [N, 7], b [M, 7])     -> [N, M] float32: BEV intersection / BEV union.
//   boxes_iou_3d(a [N, 7], b [M, 7])      -> [N, M] float32: BEV intersection x z-overlap / union
//                                            volume.
//     All three are computed in float64 and rounded once (iou3d_geometry.h): identical boxes give
//     1 to within 1e-6, disjoint or touching boxes 0, zero-size boxes 0. Deterministic; every
//     entry is computed independently of the others. CUDA and CPU agree to ~1e-12 before rounding
//     (the devices' sin/cos may differ in the last bit).
//
//   nms_bev(boxes [N, 7], scores [N] float32, iou_threshold >= 0, pre_max_size?, post_max_size?)
//     -> keep [K] int64 on the boxes' device: boxes are ordered by score, descending, ties by
//     lower index (stable); only the first pre_max_size take part; greedily, a box is kept unless
//     its BEV IoU with an already kept box is > iou_threshold. keep holds indices into the
//     ORIGINAL boxes in that (descending score) order, at most post_max_size of them.
//     Deterministic. The CPU kernel evaluates a pair only while the later box is still a
//     candidate (most pairs are rejected by a bounding circle/rectangle test); the CUDA kernel
//     builds the 64-box-block suppression bitmask of all pairs (n * ceil(n / 64) * 8 bytes for
//     n = min(N, pre_max_size) candidates, n < 4.19M) and reduces it on the host. Both give the
//     same keep for the same IoU decisions.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>

namespace pointdistiller {
namespace iou3d {

// Shape [*, 7], float32; `name` names the argument in the error.
void check_boxes(const at::Tensor& boxes, const char* name);
// Both box sets valid and on one device.
void check_box_pair(const at::Tensor& boxes_a, const at::Tensor& boxes_b);
// boxes [N, 7], scores [N] float32 on the boxes' device, threshold >= 0, sizes >= 0 when given.
void check_nms_args(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold,
                    std::optional<int64_t> pre_max_size, std::optional<int64_t> post_max_size);

// Number of boxes that take part in NMS (N capped at pre_max_size).
inline int64_t nms_candidates(int64_t n, std::optional<int64_t> pre_max_size) {
  return pre_max_size.has_value() && *pre_max_size < n ? *pre_max_size : n;
}

// Maximum number of kept boxes.
inline int64_t nms_max_keep(int64_t n, std::optional<int64_t> post_max_size) {
  return post_max_size.has_value() && *post_max_size < n ? *post_max_size : n;
}

}  // namespace iou3d
}  // namespace pointdistiller
