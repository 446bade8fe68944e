// gather_edges: edge features cat(features[neighbour], features[centre]) for a kNN graph.
//
// Schemas:
//   gather_edges(Tensor features, Tensor idx, Tensor centre) -> Tensor
//   gather_edges_backward(Tensor grad, Tensor idx, Tensor centre, SymInt num_rows) -> Tensor
//
// Forward
//   features [M, C]  float32 / float64 / float16 / bfloat16
//   idx      [Q, k]  int64, rows of features in [0, M)
//   centre   [Q]     int64, rows of features in [0, M)
//   out      [Q, 2C, k] features' dtype, contiguous:
//            out[q, c, j]     = features[idx[q, j], c]   (c < C, neighbour first)
//            out[q, C + c, j] = features[centre[q], c]   (then the centre, repeated over j)
// Backward (gather_edges_backward)
//   grad     [Q, 2C, k] -> grad_features [num_rows, C], grad's dtype:
//            grad_features[m, c] = sum over (q, j) with idx[q, j] == m of grad[q, c, j]
//                                + sum over q with centre[q] == m of sum_j grad[q, C + c, j]
//   Accumulated in float32 for float16/bfloat16 (float64 for float64), then cast.
//   CPU: deterministic; for every element the terms are added in the order q ascending, within q
//   the neighbours j ascending and then the centre's row sum (j ascending); threads own disjoint
//   channel ranges, so the order does not depend on the thread count.
//   CUDA: atomic adds, so the summation order (and the last bits) may vary between runs.
// Errors: ValueError (std::invalid_argument, common/check.h) for dtypes, shapes, devices and
// out-of-range rows; the Python wrapper raises TypeError for dtypes before calling.
#pragma once

#include <ATen/ATen.h>

namespace pointdistiller {
namespace gather_edges_detail {

// Checks the forward arguments, including that every row index lies in [0, M).
void check_forward_args(const at::Tensor& features, const at::Tensor& idx,
                        const at::Tensor& centre);

// Checks the backward arguments, including that every row index lies in [0, num_rows).
void check_backward_args(const at::Tensor& grad, const at::Tensor& idx, const at::Tensor& centre,
                         int64_t num_rows);

}  // namespace gather_edges_detail
}  // namespace pointdistiller
