// CUDA kernel of pointdistiller::knn: tiled brute force, one warp per query, 8 queries per block.
//
// Every block stages tiles of kTile refs x kCChunk channels (and the same channels of its 8
// queries) in shared memory; each lane accumulates the exact distances (contract in knn.h:
// sequential float32 sum of separately rounded squares, __fmul_rn/__fadd_rn so nothing is fused)
// of kTile / 32 refs. The warp then offers its 32-distance batches to a sorted top-k list (shared
// memory for k <= kSharedListMax, otherwise the query's output row): candidates that beat the
// current k-th neighbour are inserted one at a time, lowest lane first, by a warp-cooperative
// rank count (ballot) and shift. The list order (distance, index) is total, so the result is
// deterministic and equal to the CPU kernels' bit for bit.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdint>

#include "common/check.h"
#include "knn/knn.h"

namespace pointdistiller {
namespace {

constexpr int kWarps = 8;                 // queries per block
constexpr int kThreads = kWarps * 32;
constexpr int kTile = 128;                // refs per shared-memory tile
constexpr int kCChunk = 32;               // channels per shared-memory tile
constexpr int kPerLane = kTile / 32;      // refs per lane and tile
constexpr int64_t kSharedListMax = 256;   // largest k kept in shared memory

__device__ __forceinline__ bool before(float d0, int64_t i0, float d1, int64_t i1) {
  return d0 < d1 || (d0 == d1 && i0 < i1);
}

template <bool kSharedList>
__global__ void __launch_bounds__(kThreads)
    knn_kernel(const float* __restrict__ query, const float* __restrict__ ref,
               const int64_t* __restrict__ query_offsets, const int64_t* __restrict__ ref_offsets,
               int64_t num_samples, int64_t Q, int64_t M, int64_t C, int64_t k,
               int64_t* __restrict__ out_idx, float* __restrict__ out_d) {
  __shared__ float rs[kCChunk][kTile + 1];  // +1: conflict-free transposed stores
  __shared__ float qs[kWarps][kCChunk];
  __shared__ int64_t warp_lo[kWarps], warp_hi[kWarps];
  extern __shared__ int64_t list_mem[];  // kSharedList: [kWarps][k] int64 then [kWarps][k] float

  const unsigned full = 0xffffffffu;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int64_t q = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  const bool active = q < Q;

  // Ref rows this query may see: those of its sample.
  int64_t lo = 0, hi = M;
  if (active && query_offsets != nullptr) {
    int64_t a = 0, z = num_samples;  // query_offsets[a] <= q < query_offsets[z]
    while (z - a > 1) {
      const int64_t mid = (a + z) / 2;
      if (query_offsets[mid] <= q) {
        a = mid;
      } else {
        z = mid;
      }
    }
    lo = ref_offsets[a];
    hi = ref_offsets[a + 1];
  }
  if (lane == 0) {
    warp_lo[warp] = active ? lo : INT64_MAX;
    warp_hi[warp] = active ? hi : INT64_MIN;
  }
  __syncthreads();
  // The block scans the union of its queries' ranges (contiguous: queries are sorted by sample).
  int64_t block_lo = INT64_MAX, block_hi = INT64_MIN;
  for (int w = 0; w < kWarps; ++w) {
    block_lo = warp_lo[w] < block_lo ? warp_lo[w] : block_lo;
    block_hi = warp_hi[w] > block_hi ? warp_hi[w] : block_hi;
  }

  int64_t* li;
  float* ld;
  if constexpr (kSharedList) {
    li = list_mem + static_cast<int64_t>(warp) * k;
    ld = reinterpret_cast<float*>(list_mem + kWarps * k) + static_cast<int64_t>(warp) * k;
  } else {
    li = out_idx + (active ? q : 0) * k;
    ld = out_d + (active ? q : 0) * k;
  }
  int64_t count = 0;
  float worst_d = 0.0f;
  int64_t worst_i = 0;

  for (int64_t t0 = block_lo; t0 < block_hi; t0 += kTile) {
    float acc[kPerLane];
#pragma unroll
    for (int t = 0; t < kPerLane; ++t) acc[t] = 0.0f;
    for (int64_t c0 = 0; c0 < C; c0 += kCChunk) {
      const int nc = static_cast<int>(C - c0 < kCChunk ? C - c0 : kCChunk);
      __syncthreads();
      for (int e = threadIdx.x; e < kTile * kCChunk; e += kThreads) {
        const int j = e / kCChunk, c = e % kCChunk;
        const int64_t r = t0 + j;
        rs[c][j] = (r < block_hi && c < nc) ? ref[r * C + c0 + c] : 0.0f;
      }
      for (int e = threadIdx.x; e < kWarps * kCChunk; e += kThreads) {
        const int w = e / kCChunk, c = e % kCChunk;
        const int64_t qq = static_cast<int64_t>(blockIdx.x) * kWarps + w;
        qs[w][c] = (qq < Q && c < nc) ? query[qq * C + c0 + c] : 0.0f;
      }
      __syncthreads();
      if (nc == kCChunk) {
#pragma unroll 8
        for (int c = 0; c < kCChunk; ++c) {
          const float qv = qs[warp][c];
#pragma unroll
          for (int t = 0; t < kPerLane; ++t) {
            const float diff = __fsub_rn(qv, rs[c][lane + 32 * t]);
            acc[t] = __fadd_rn(acc[t], __fmul_rn(diff, diff));
          }
        }
      } else {
        for (int c = 0; c < nc; ++c) {
          const float qv = qs[warp][c];
#pragma unroll
          for (int t = 0; t < kPerLane; ++t) {
            const float diff = __fsub_rn(qv, rs[c][lane + 32 * t]);
            acc[t] = __fadd_rn(acc[t], __fmul_rn(diff, diff));
          }
        }
      }
    }
    if (!active) continue;  // warp-uniform; the warp still helps stage the next tiles

#pragma unroll
    for (int t = 0; t < kPerLane; ++t) {
      const int64_t r = t0 + lane + 32 * t;
      const float d = acc[t];
      const bool cand = r >= lo && r < hi && (count < k || before(d, r, worst_d, worst_i));
      unsigned mask = __ballot_sync(full, cand);
      while (mask != 0) {
        const int src = __ffs(mask) - 1;
        mask &= mask - 1;
        const float cd = __shfl_sync(full, d, src);
        const int64_t ci = __shfl_sync(full, r, src);
        if (count == k && !before(cd, ci, worst_d, worst_i)) continue;
        // Rank of the candidate in the sorted list.
        int64_t pos = 0;
        for (int64_t base = 0; base < count; base += 32) {
          const int64_t e = base + lane;
          const bool lt = e < count && before(ld[e], li[e], cd, ci);
          pos += __popc(__ballot_sync(full, lt));
        }
        // Shift [pos, last) one slot up (the k-th entry falls off when the list is full).
        const int64_t last = count < k ? count : k - 1;
        for (int64_t top = last; top > pos; top -= 32) {
          const int64_t e = top - 1 - lane;
          const bool mv = e >= pos;
          float vd = 0.0f;
          int64_t vi = 0;
          if (mv) {
            vd = ld[e];
            vi = li[e];
          }
          __syncwarp();
          if (mv) {
            ld[e + 1] = vd;
            li[e + 1] = vi;
          }
          __syncwarp();
        }
        if (lane == 0) {
          ld[pos] = cd;
          li[pos] = ci;
        }
        __syncwarp();
        if (count < k) ++count;
        if (count == k) {
          worst_d = ld[k - 1];
          worst_i = li[k - 1];
        }
      }
    }
  }

  if constexpr (kSharedList) {
    if (active) {
      for (int64_t e = lane; e < k; e += 32) {
        out_idx[q * k + e] = li[e];
        out_d[q * k + e] = ld[e];
      }
    }
  }
}

std::tuple<at::Tensor, at::Tensor> knn_cuda(const at::Tensor& query, const at::Tensor& ref,
                                            int64_t k,
                                            const c10::optional<at::Tensor>& query_offsets,
                                            const c10::optional<at::Tensor>& ref_offsets) {
  const knn_detail::KnnLayout layout =
      knn_detail::check_knn_args(query, ref, k, query_offsets, ref_offsets);
  const c10::cuda::CUDAGuard guard(query.device());
  const at::Tensor q = query.contiguous();
  const at::Tensor r = ref.contiguous();
  const int64_t Q = q.size(0), M = r.size(0), C = q.size(1);
  at::Tensor idx = at::empty({Q, k}, q.options().dtype(at::kLong));
  at::Tensor dist = at::empty({Q, k}, q.options());
  if (Q == 0) return {idx, dist};

  at::Tensor qoff, roff;
  const int64_t* qoff_p = nullptr;
  const int64_t* roff_p = nullptr;
  if (query_offsets.has_value()) {
    qoff = query_offsets->contiguous();
    roff = ref_offsets->contiguous();
    qoff_p = qoff.data_ptr<int64_t>();
    roff_p = roff.data_ptr<int64_t>();
  }
  const int64_t blocks = (Q + kWarps - 1) / kWarps;
  PD_CHECK_VALUE(blocks <= INT32_MAX, "knn: too many queries for one launch (", Q, ")");
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (k <= kSharedListMax) {
    const size_t shared = static_cast<size_t>(kWarps) * k * (sizeof(int64_t) + sizeof(float));
    knn_kernel<true><<<static_cast<unsigned>(blocks), kThreads, shared, stream>>>(
        q.data_ptr<float>(), r.data_ptr<float>(), qoff_p, roff_p, layout.num_samples, Q, M, C, k,
        idx.data_ptr<int64_t>(), dist.data_ptr<float>());
  } else {
    knn_kernel<false><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        q.data_ptr<float>(), r.data_ptr<float>(), qoff_p, roff_p, layout.num_samples, Q, M, C, k,
        idx.data_ptr<int64_t>(), dist.data_ptr<float>());
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {idx, dist};
}

}  // namespace
}  // namespace pointdistiller

TORCH_LIBRARY_IMPL(pointdistiller, CUDA, m) { m.impl("knn", &pointdistiller::knn_cuda); }
