// CPU kernels of the iou3d ops. Pairwise ops: one float64 evaluation per (a, b) pair
// (iou3d_geometry.h), rows split across threads with at::parallel_for; each entry is written by
// exactly one thread, so results do not depend on the thread count. NMS: stable descending sort,
// then the sequential greedy pass, which evaluates a pair only while the later box is still a
// candidate; overlap_bev rejects pairs whose circumscribed circles or bounding rectangles are
// disjoint in a few flops. Per-box sin/cos are computed once (make_bev_geom).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "common/check.h"
#include "iou3d/iou3d.h"
#include "iou3d/iou3d_geometry.h"

namespace pointdistiller {
namespace iou3d {
namespace {

template <typename PairFn>
at::Tensor pairwise_cpu(const at::Tensor& boxes_a_in, const at::Tensor& boxes_b_in) {
  check_box_pair(boxes_a_in, boxes_b_in);
  const at::Tensor boxes_a = boxes_a_in.contiguous();
  const at::Tensor boxes_b = boxes_b_in.contiguous();
  const int64_t n = boxes_a.size(0);
  const int64_t m = boxes_b.size(0);
  at::Tensor out = at::empty({n, m}, boxes_a.options());
  if (n == 0 || m == 0) return out;
  const float* a = boxes_a.data_ptr<float>();
  const float* b = boxes_b.data_ptr<float>();
  float* o = out.data_ptr<float>();
  std::vector<BevGeom> geom_b(m);
  for (int64_t j = 0; j < m; ++j) geom_b[j] = make_bev_geom(b + j * kBoxDim);
  const PairFn pair_fn;
  const int64_t grain = std::max<int64_t>(1, 4096 / m);
  at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float* box_a = a + i * kBoxDim;
      const BevGeom geom_a = make_bev_geom(box_a);
      float* row = o + i * m;
      for (int64_t j = 0; j < m; ++j) {
        row[j] = static_cast<float>(pair_fn(box_a, geom_a, b + j * kBoxDim, geom_b[j]));
      }
    }
  });
  return out;
}

at::Tensor boxes_overlap_bev_cpu(const at::Tensor& boxes_a, const at::Tensor& boxes_b) {
  return pairwise_cpu<OverlapBevFn>(boxes_a, boxes_b);
}

at::Tensor boxes_iou_bev_cpu(const at::Tensor& boxes_a, const at::Tensor& boxes_b) {
  return pairwise_cpu<IouBevFn>(boxes_a, boxes_b);
}

at::Tensor boxes_iou_3d_cpu(const at::Tensor& boxes_a, const at::Tensor& boxes_b) {
  return pairwise_cpu<Iou3dFn>(boxes_a, boxes_b);
}

at::Tensor nms_bev_cpu(const at::Tensor& boxes_in, const at::Tensor& scores_in,
                       double iou_threshold, std::optional<int64_t> pre_max_size,
                       std::optional<int64_t> post_max_size) {
  check_nms_args(boxes_in, scores_in, iou_threshold, pre_max_size, post_max_size);
  const at::Tensor boxes = boxes_in.contiguous();
  const at::Tensor scores = scores_in.contiguous();
  const int64_t n_all = boxes.size(0);
  const int64_t max_keep = nms_max_keep(n_all, post_max_size);
  const float* s = scores.data_ptr<float>();
  // A NaN score would break the sort's strict weak ordering.
  PD_CHECK_VALUE(std::none_of(s, s + n_all, [](float v) { return std::isnan(v); }),
                    "scores must not contain NaN");
  std::vector<int64_t> order(n_all);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [s](int64_t i, int64_t j) { return s[i] > s[j]; });
  const int64_t n = nms_candidates(n_all, pre_max_size);
  // Geometry of the candidates in score order, so the inner loop reads memory sequentially.
  std::vector<BevGeom> geom(n);
  const float* b = boxes.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) geom[i] = make_bev_geom(b + order[i] * kBoxDim);
  std::vector<uint8_t> suppressed(n, 0);
  std::vector<int64_t> keep;
  keep.reserve(std::min<int64_t>(n, max_keep));
  for (int64_t i = 0; i < n && max_keep > 0; ++i) {
    if (suppressed[i]) continue;
    keep.push_back(order[i]);
    if (static_cast<int64_t>(keep.size()) == max_keep) break;
    for (int64_t j = i + 1; j < n; ++j) {
      if (!suppressed[j] && iou_bev(geom[i], geom[j]) > iou_threshold) {
        suppressed[j] = 1;
      }
    }
  }
  at::Tensor out = at::empty({static_cast<int64_t>(keep.size())}, boxes.options().dtype(at::kLong));
  std::copy(keep.begin(), keep.end(), out.data_ptr<int64_t>());
  return out;
}

}  // namespace
}  // namespace iou3d
}  // namespace pointdistiller

TORCH_LIBRARY_IMPL(pointdistiller, CPU, m) {
  m.impl("boxes_overlap_bev", &pointdistiller::iou3d::boxes_overlap_bev_cpu);
  m.impl("boxes_iou_bev", &pointdistiller::iou3d::boxes_iou_bev_cpu);
  m.impl("boxes_iou_3d", &pointdistiller::iou3d::boxes_iou_3d_cpu);
  m.impl("nms_bev", &pointdistiller::iou3d::nms_bev_cpu);
}
