// knn: exact k nearest neighbours by squared Euclidean distance, per sample of a ragged batch.
//
// Schema: knn(Tensor query, Tensor ref, int k, Tensor? query_offsets=None,
//             Tensor? ref_offsets=None) -> (Tensor idx, Tensor dist2)
//
// Inputs
//   query          [Q, C] float32, finite (C >= 1)
//   ref            [M, C] float32, finite, same device as query
//   k              1 <= k <= number of ref rows of every sample that has at least one query
//   query_offsets  [B + 1] int64 cumulative counts (offsets[0] == 0, non-decreasing,
//   ref_offsets    offsets[B] == Q resp. M); both or neither (neither = one sample). Same device.
// Outputs
//   idx    [Q, k] int64  global row indices into ref; a query of sample b only sees rows
//                        ref_offsets[b]:ref_offsets[b + 1]
//   dist2  [Q, k] float32 squared distances, ascending
//
// Distance (the contract every kernel and the reference follow):
//   dist2(q, r) = sum over c = 0, 1, ..., C-1 of (q[c] - r[c])^2, evaluated in float32 in that
//   order, each subtraction, product and sum rounded separately (no fused multiply-add). The value
//   is therefore a pure function of the two rows: duplicated points give bit-identical distances,
//   CPU and CUDA agree bit for bit, and ties are well defined.
// Ordering: ascending by (dist2, ref index): among equal distances the lower index comes first.
// Determinism: results do not depend on thread count, block order or tiling.
//
// Algorithms (never materialise a Q x M matrix)
//   CPU, C <= 3: a k-d tree per sample (median splits on the widest axis, leaves of a few points,
//     tight bounding box and smallest row index per node), searched depth first with a bounded
//     max-heap; a node is skipped when its box distance exceeds the current k-th distance, or equals
//     it and all its rows have higher indices.
//   CPU, C > 3: tiled brute force, pruned when the refs are close to low rank (at least 90 % of
//     their variance along the 8 leading principal directions; otherwise refs and queries stay in
//     row order and nothing is pruned). Refs and queries are ordered by a k-d partition of
//     their projections on the refs' 8 leading principal directions; groups of queries visit ref
//     leaves nearest box first and stop at the first leaf whose certified lower bound exceeds
//     every query's current k-th distance bound (features near a low-rank subspace, such as pillar
//     features, skip most of the work; isotropic data skips none). Within a visited leaf, a register
//     micro-kernel computes dot products, lower/upper bounds of each distance from
//     |q|^2 + |r|^2 - 2 q.r with a rigorous rounding-error margin, and a per-query candidate buffer
//     keeps every ref whose lower bound can still reach the top k. The survivors' exact distances
//     (the definition above) decide the result. Parallel over query groups.
//   Extra CPU memory: the tree (about 30 bytes per ref); or, brute force, one packed copy of a
//     sample's refs (M_s x C floats; pruned: a second, reordered copy as given and 64 bytes per ref
//     or query for the projections while ordering) and candidate buffers of (2k + 64) x 16 bytes
//     per query of each active group of queries.
//   CUDA: tiled brute force. One warp per query, 8 queries per block; ref tiles and query chunks
//     are staged through shared memory, every lane computes exact distances of its refs and the warp
//     maintains a sorted top-k list (shared memory when small, else the output row) by cooperative
//     insertion.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace pointdistiller {
namespace knn_detail {

// Host copy of the per-sample layout, after validation.
struct KnnLayout {
  int64_t num_samples = 1;
  std::vector<int64_t> query_offsets;  // [B + 1]
  std::vector<int64_t> ref_offsets;    // [B + 1]
};

// Validates every argument (shapes, dtypes, devices, offsets, k against each sample's ref count,
// finiteness) and returns the layout. Errors: ValueError (common/check.h); the Python wrapper
// raises TypeError for dtypes before calling.
KnnLayout check_knn_args(const at::Tensor& query, const at::Tensor& ref, int64_t k,
                         const c10::optional<at::Tensor>& query_offsets,
                         const c10::optional<at::Tensor>& ref_offsets);

}  // namespace knn_detail
}  // namespace pointdistiller
