// Schema of pointdistiller::scatter_reduce and the argument checks shared by the CPU and CUDA
// kernels. The contract is in scatter.h.
#include "common/check.h"
#include "scatter/scatter.h"

#include <ATen/ATen.h>
#include <torch/library.h>

namespace pointdistiller {
namespace scatter {

Reduce check_args(const at::Tensor& features, const at::Tensor& index, int64_t num_segments,
                  c10::string_view reduce) {
  PD_CHECK_TYPE(features.scalar_type() == at::kFloat || features.scalar_type() == at::kDouble,
                   "scatter_reduce: features must be float32 or float64, got ",
                   features.scalar_type());
  PD_CHECK_VALUE(features.dim() == 2, "scatter_reduce: features must have shape [N, C], got ",
                    features.sizes());
  PD_CHECK_TYPE(index.scalar_type() == at::kLong, "scatter_reduce: index must be int64, got ",
                   index.scalar_type());
  PD_CHECK_VALUE(index.dim() == 1 && index.size(0) == features.size(0),
                    "scatter_reduce: index must have shape [N] = [", features.size(0),
                    "] (one entry per row of features), got ", index.sizes());
  PD_CHECK_VALUE(index.device() == features.device(),
                    "scatter_reduce: index must be on the device of features (", features.device(),
                    "), got ", index.device());
  PD_CHECK_VALUE(num_segments >= 0, "scatter_reduce: num_segments must be >= 0, got ",
                    num_segments);
  if (reduce == "mean") return Reduce::kMean;
  if (reduce == "max") return Reduce::kMax;
  PD_CHECK_VALUE(false, "scatter_reduce: reduce must be 'mean' or 'max', got '",
                    std::string(reduce), "'");
}

void throw_bad_index(int64_t position, int64_t value, int64_t num_segments) {
  PD_CHECK_VALUE(false, "scatter_reduce: index[", position, "] = ", value,
                    " is outside [-1, num_segments) = [-1, ", num_segments, ")");
}

}  // namespace scatter
}  // namespace pointdistiller

TORCH_LIBRARY_FRAGMENT(pointdistiller, m) {
  m.def(
      "scatter_reduce(Tensor features, Tensor index, int num_segments, str reduce) -> "
      "(Tensor out, Tensor aux)");
}
