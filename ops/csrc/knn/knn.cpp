// Schema of pointdistiller::knn and the argument checks shared by its CPU and CUDA kernels.
#include "common/check.h"
#include "knn/knn.h"

#include <torch/library.h>

#include <cmath>
#include <string>

namespace pointdistiller {
namespace knn_detail {
namespace {

// True when every element of a float32 CPU tensor is finite (no NaN, no +-inf).
bool all_finite_cpu(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  const float* p = c.data_ptr<float>();
  const int64_t n = c.numel();
  // 0 * x is 0 for finite x and NaN for NaN/inf; eight lanes so the loop vectorises.
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int l = 0; l < 8; ++l) acc[l] += 0.0f * p[i + l];
  }
  for (; i < n; ++i) acc[0] += 0.0f * p[i];
  float s = 0;
  for (int l = 0; l < 8; ++l) s += acc[l];
  return s == 0.0f;
}

bool all_finite(const at::Tensor& t) {
  if (t.numel() == 0) return true;
  if (t.device().is_cpu()) return all_finite_cpu(t);
  return at::isfinite(t).all().item<bool>();
}

std::vector<int64_t> host_offsets(const at::Tensor& off, const char* name, int64_t total,
                                  const char* rows_of) {
  PD_CHECK_TYPE(off.scalar_type() == at::kLong, "knn: ", name, " must be int64, got ",
                   off.scalar_type());
  PD_CHECK_VALUE(off.dim() == 1 && off.size(0) >= 1, "knn: ", name,
                    " must be a 1-D [B + 1] tensor, got shape ", off.sizes());
  const at::Tensor h = off.to(at::kCPU).contiguous();
  const int64_t* p = h.data_ptr<int64_t>();
  std::vector<int64_t> v(p, p + h.numel());
  PD_CHECK_VALUE(v[0] == 0, "knn: ", name, "[0] must be 0, got ", v[0]);
  for (size_t b = 1; b < v.size(); ++b) {
    PD_CHECK_VALUE(v[b] >= v[b - 1], "knn: ", name, " must be non-decreasing, but ", name, "[",
                      b, "] = ", v[b], " < ", name, "[", b - 1, "] = ", v[b - 1]);
  }
  PD_CHECK_VALUE(v.back() == total, "knn: ", name, "[-1] must equal the number of ", rows_of,
                    " rows (", total, "), got ", v.back());
  return v;
}

}  // namespace

KnnLayout check_knn_args(const at::Tensor& query, const at::Tensor& ref, int64_t k,
                         const c10::optional<at::Tensor>& query_offsets,
                         const c10::optional<at::Tensor>& ref_offsets) {
  PD_CHECK_TYPE(query.scalar_type() == at::kFloat, "knn: query must be float32, got ",
                   query.scalar_type(), " (cast with .float())");
  PD_CHECK_TYPE(ref.scalar_type() == at::kFloat, "knn: ref must be float32, got ",
                   ref.scalar_type(), " (cast with .float())");
  PD_CHECK_VALUE(query.dim() == 2, "knn: query must be [Q, C], got shape ", query.sizes());
  PD_CHECK_VALUE(ref.dim() == 2, "knn: ref must be [M, C], got shape ", ref.sizes());
  PD_CHECK_VALUE(query.size(1) == ref.size(1), "knn: query has ", query.size(1),
                    " channels but ref has ", ref.size(1));
  PD_CHECK_VALUE(query.size(1) >= 1, "knn: query and ref need at least one channel");
  PD_CHECK_VALUE(query.device() == ref.device(), "knn: query is on ", query.device(),
                    " but ref is on ", ref.device());
  PD_CHECK_VALUE(k >= 1, "knn: k must be >= 1, got ", k);
  PD_CHECK_VALUE(query_offsets.has_value() == ref_offsets.has_value(),
                    "knn: give both query_offsets and ref_offsets, or neither");

  const int64_t Q = query.size(0), M = ref.size(0);
  KnnLayout layout;
  if (query_offsets.has_value()) {
    for (const auto* off : {&*query_offsets, &*ref_offsets}) {
      PD_CHECK_VALUE(off->device() == query.device(), "knn: ",
                        off == &*query_offsets ? "query_offsets" : "ref_offsets", " is on ",
                        off->device(), " but query is on ", query.device());
    }
    layout.query_offsets = host_offsets(*query_offsets, "query_offsets", Q, "query");
    layout.ref_offsets = host_offsets(*ref_offsets, "ref_offsets", M, "ref");
    PD_CHECK_VALUE(layout.query_offsets.size() == layout.ref_offsets.size(),
                      "knn: query_offsets has ", layout.query_offsets.size(),
                      " entries but ref_offsets has ", layout.ref_offsets.size(),
                      "; both must be [B + 1] for the same B");
    layout.num_samples = static_cast<int64_t>(layout.query_offsets.size()) - 1;
    for (int64_t b = 0; b < layout.num_samples; ++b) {
      const int64_t nq = layout.query_offsets[b + 1] - layout.query_offsets[b];
      const int64_t nr = layout.ref_offsets[b + 1] - layout.ref_offsets[b];
      PD_CHECK_VALUE(nq == 0 || nr >= k, "knn: sample ", b, " has ", nr,
                        " reference rows but k = ", k, " neighbours were asked for (it has ", nq,
                        " queries)");
    }
  } else {
    layout.num_samples = 1;
    layout.query_offsets = {0, Q};
    layout.ref_offsets = {0, M};
    PD_CHECK_VALUE(Q == 0 || M >= k, "knn: ref has ", M, " rows but k = ", k,
                      " neighbours were asked for");
  }
  PD_CHECK_VALUE(all_finite(query), "knn: query contains NaN or infinite values");
  PD_CHECK_VALUE(all_finite(ref), "knn: ref contains NaN or infinite values");
  return layout;
}

}  // namespace knn_detail
}  // namespace pointdistiller

TORCH_LIBRARY_FRAGMENT(pointdistiller, m) {
  m.def(
      "knn(Tensor query, Tensor ref, int k, Tensor? query_offsets=None, "
      "Tensor? ref_offsets=None) -> (Tensor idx, Tensor dist2)");
}
