// Schemas of pointdistiller::gather_edges(_backward) and the argument checks shared by the CPU and
// CUDA kernels.
#include "common/check.h"
#include "gather_edges/gather_edges.h"

#include <torch/library.h>

namespace pointdistiller {
namespace gather_edges_detail {
namespace {

bool is_supported_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

void check_indices(const at::Tensor& features_like, const at::Tensor& idx,
                   const at::Tensor& centre, const char* op) {
  PD_CHECK_TYPE(idx.scalar_type() == at::kLong, op, ": idx must be int64, got ",
                   idx.scalar_type());
  PD_CHECK_TYPE(centre.scalar_type() == at::kLong, op, ": centre must be int64, got ",
                   centre.scalar_type());
  PD_CHECK_VALUE(idx.dim() == 2, op, ": idx must be [Q, k], got shape ", idx.sizes());
  PD_CHECK_VALUE(centre.dim() == 1 && centre.size(0) == idx.size(0), op,
                    ": centre must be [Q] with Q = idx.shape[0] = ", idx.size(0), ", got shape ",
                    centre.sizes());
  PD_CHECK_VALUE(idx.device() == features_like.device(), op, ": idx is on ", idx.device(),
                    " but the features are on ", features_like.device());
  PD_CHECK_VALUE(centre.device() == features_like.device(), op, ": centre is on ",
                    centre.device(), " but the features are on ", features_like.device());
}

void check_range(const at::Tensor& rows, const char* name, int64_t num_rows, const char* op) {
  if (rows.numel() == 0) return;
  const auto mm = at::aminmax(rows);
  const int64_t lo = std::get<0>(mm).item<int64_t>();
  const int64_t hi = std::get<1>(mm).item<int64_t>();
  PD_CHECK_VALUE(lo >= 0 && hi < num_rows, op, ": ", name, " holds row ", lo < 0 ? lo : hi,
                    " outside [0, ", num_rows, ") (the features have ", num_rows, " rows)");
}

}  // namespace

void check_forward_args(const at::Tensor& features, const at::Tensor& idx,
                        const at::Tensor& centre) {
  PD_CHECK_TYPE(is_supported_float(features.scalar_type()),
                   "gather_edges: features must be float32, float64, float16 or bfloat16, got ",
                   features.scalar_type());
  PD_CHECK_VALUE(features.dim() == 2, "gather_edges: features must be [M, C], got shape ",
                    features.sizes());
  check_indices(features, idx, centre, "gather_edges");
  check_range(idx, "idx", features.size(0), "gather_edges");
  check_range(centre, "centre", features.size(0), "gather_edges");
}

void check_backward_args(const at::Tensor& grad, const at::Tensor& idx, const at::Tensor& centre,
                         int64_t num_rows) {
  PD_CHECK_TYPE(is_supported_float(grad.scalar_type()),
                   "gather_edges_backward: grad must be float32, float64, float16 or bfloat16, "
                   "got ", grad.scalar_type());
  PD_CHECK_VALUE(num_rows >= 0, "gather_edges_backward: num_rows must be >= 0, got ", num_rows);
  check_indices(grad, idx, centre, "gather_edges_backward");
  PD_CHECK_VALUE(grad.dim() == 3 && grad.size(0) == idx.size(0) && grad.size(1) % 2 == 0 &&
                        grad.size(2) == idx.size(1),
                    "gather_edges_backward: grad must be [Q, 2C, k] with [Q, k] = idx.shape = ",
                    idx.sizes(), ", got shape ", grad.sizes());
  check_range(idx, "idx", num_rows, "gather_edges_backward");
  check_range(centre, "centre", num_rows, "gather_edges_backward");
}

}  // namespace gather_edges_detail
}  // namespace pointdistiller

TORCH_LIBRARY_FRAGMENT(pointdistiller, m) {
  m.def("gather_edges(Tensor features, Tensor idx, Tensor centre) -> Tensor");
  m.def(
      "gather_edges_backward(Tensor grad, Tensor idx, Tensor centre, SymInt num_rows) -> Tensor");
}
