// CPU kernels of pointdistiller::knn: a k-d tree for C <= 3, a tiled brute force with exact
// re-ranking for C > 3. Contract (distance definition, ordering, determinism) in knn.h.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "common/check.h"
#include "knn/knn.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define PD_KNN_X86_AVX2 1
#include <immintrin.h>
#endif

namespace pointdistiller {
namespace {

// ------------------------------------------------------------------------------------------------
// Exact distance of the contract: sequential float32 sum of separately rounded squares.

// t * t rounded to float32; the empty asm keeps the compiler from fusing it into an FMA.
inline float square_rounded(float t) {
  float p = t * t;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __asm__("" : "+x"(p));
#elif defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
  __asm__("" : "+w"(p));
#endif
  return p;
}

struct Neighbour {
  float d;
  int64_t i;
};

// Total order of the contract: by distance, then by index.
inline bool before(float d0, int64_t i0, float d1, int64_t i1) {
  return d0 < d1 || (d0 == d1 && i0 < i1);
}
inline bool before(const Neighbour& a, const Neighbour& b) { return before(a.d, a.i, b.d, b.i); }

// ------------------------------------------------------------------------------------------------
// k-d tree (C <= 3)

constexpr int kLeafSize = 8;

template <int D>
struct KdPoint {
  float x[D];
  int32_t i;  // row within the sample
};

template <int D>
struct KdNode {
  float lo[D], hi[D];  // tight bounding box of the node's points
  int32_t begin, end;  // point range
  int32_t left;        // -1 for a leaf; right child is stored in `right`
  int32_t right;
  int32_t min_index;   // smallest row index in the node
};

template <int D>
class KdTree {
 public:
  KdTree(const float* ref, int64_t n) {
    pts_.resize(n);
    for (int64_t j = 0; j < n; ++j) {
      for (int d = 0; d < D; ++d) pts_[j].x[d] = ref[j * D + d];
      pts_[j].i = static_cast<int32_t>(j);
    }
    nodes_.reserve(2 * (n / kLeafSize + 1));
    if (n > 0) build(0, static_cast<int32_t>(n));
  }

  // k nearest of q, written ascending by (distance, index) into out[0:k]. heap: scratch of size k.
  void query(const float* q, int64_t k, Neighbour* heap, Neighbour* out) const {
    int64_t size = 0;
    float worst_d = std::numeric_limits<float>::infinity();
    int64_t worst_i = std::numeric_limits<int64_t>::max();
    auto heap_less = [](const Neighbour& a, const Neighbour& b) { return before(a, b); };

    struct Item {
      int32_t node;
      float dist;
    };
    Item stack[128];
    int top = 0;
    stack[top++] = {0, box_dist(nodes_[0], q)};
    while (top > 0) {
      const Item it = stack[--top];
      const KdNode<D>& nd = nodes_[it.node];
      // Skip when no row of the node can come before the current k-th neighbour.
      if (it.dist > worst_d || (it.dist == worst_d && nd.min_index > worst_i)) continue;
      if (nd.left < 0) {
        for (int32_t j = nd.begin; j < nd.end; ++j) {
          const KdPoint<D>& p = pts_[j];
          float dist = 0.0f;
          for (int d = 0; d < D; ++d) dist = dist + square_rounded(q[d] - p.x[d]);
          if (!before(dist, p.i, worst_d, worst_i)) continue;
          if (size < k) {
            heap[size++] = {dist, p.i};
            std::push_heap(heap, heap + size, heap_less);
          } else {
            std::pop_heap(heap, heap + size, heap_less);
            heap[size - 1] = {dist, p.i};
            std::push_heap(heap, heap + size, heap_less);
          }
          if (size == k) {
            worst_d = heap[0].d;
            worst_i = heap[0].i;
          }
        }
        continue;
      }
      const float dl = box_dist(nodes_[nd.left], q);
      const float dr = box_dist(nodes_[nd.right], q);
      // Push the farther child first so the nearer one is searched next.
      if (dl <= dr) {
        stack[top++] = {nd.right, dr};
        stack[top++] = {nd.left, dl};
      } else {
        stack[top++] = {nd.left, dl};
        stack[top++] = {nd.right, dr};
      }
    }
    std::sort_heap(heap, heap + size, heap_less);
    std::copy(heap, heap + size, out);
  }

 private:
  // Squared distance from q to the box, summed over axes in order like the point distance. Each
  // axis gap is <= the gap to any point of the box after rounding, so this is a lower bound of
  // every point distance of the node as computed by the contract.
  static float box_dist(const KdNode<D>& nd, const float* q) {
    float dist = 0.0f;
    for (int d = 0; d < D; ++d) {
      float g = 0.0f;
      if (q[d] < nd.lo[d]) {
        g = nd.lo[d] - q[d];
      } else if (q[d] > nd.hi[d]) {
        g = q[d] - nd.hi[d];
      }
      dist = dist + square_rounded(g);
    }
    return dist;
  }

  int32_t build(int32_t begin, int32_t end) {
    const int32_t id = static_cast<int32_t>(nodes_.size());
    nodes_.emplace_back();
    KdNode<D> nd;
    nd.begin = begin;
    nd.end = end;
    nd.left = nd.right = -1;
    nd.min_index = std::numeric_limits<int32_t>::max();
    for (int d = 0; d < D; ++d) {
      nd.lo[d] = std::numeric_limits<float>::infinity();
      nd.hi[d] = -std::numeric_limits<float>::infinity();
    }
    for (int32_t j = begin; j < end; ++j) {
      for (int d = 0; d < D; ++d) {
        nd.lo[d] = std::min(nd.lo[d], pts_[j].x[d]);
        nd.hi[d] = std::max(nd.hi[d], pts_[j].x[d]);
      }
      nd.min_index = std::min(nd.min_index, pts_[j].i);
    }
    if (end - begin > kLeafSize) {
      int axis = 0;
      for (int d = 1; d < D; ++d) {
        if (nd.hi[d] - nd.lo[d] > nd.hi[axis] - nd.lo[axis]) axis = d;
      }
      const int32_t mid = begin + (end - begin) / 2;
      std::nth_element(pts_.begin() + begin, pts_.begin() + mid, pts_.begin() + end,
                       [axis](const KdPoint<D>& a, const KdPoint<D>& b) {
                         return a.x[axis] < b.x[axis];
                       });
      nd.left = build(begin, mid);
      nd.right = build(mid, end);
    }
    nodes_[id] = nd;
    return id;
  }

  std::vector<KdPoint<D>> pts_;
  std::vector<KdNode<D>> nodes_;
};

template <int D>
void knn_kdtree_sample(const float* query, int64_t nq, const float* ref, int64_t nr,
                       int64_t ref_base, int64_t k, int64_t* out_idx, float* out_d) {
  PD_CHECK_VALUE(nr < std::numeric_limits<int32_t>::max(),
                    "knn: a sample may hold at most 2^31 - 2 reference rows, got ", nr);
  const KdTree<D> tree(ref, nr);
  at::parallel_for(0, nq, 64, [&](int64_t q0, int64_t q1) {
    std::vector<Neighbour> heap(k), best(k);
    for (int64_t q = q0; q < q1; ++q) {
      tree.query(query + q * D, k, heap.data(), best.data());
      for (int64_t j = 0; j < k; ++j) {
        out_idx[q * k + j] = ref_base + best[j].i;
        out_d[q * k + j] = best[j].d;
      }
    }
  });
}

// ------------------------------------------------------------------------------------------------
// Tiled brute force (C > 3), in one of two plans: pruned when the refs are near low rank (below),
// else dense (row order, nothing skipped; see kPruneEnergy).
//
// Ordering. The sample's refs and queries are projected on the d = min(C, 8) principal directions
// of the refs (double precision) and each set is reordered by a k-d partition of the projections
// (median splits on the widest projected axis, every left part a multiple of the leaf size): refs
// into leaves of kLeafRows rows, queries into blocks of kMR rows; work items are groups of
// kGroupBlocks consecutive blocks. Every leaf, block and group gets the bounding box of its
// projections.
// Pruning. A group visits the leaves in increasing order of the box-to-box distance (a lazy
// min-heap) and stops at the first leaf whose certified lower bound (below) exceeds every
// query's current threshold T; a block skips a visited leaf when the bound from its own box exceeds
// the block's largest T. Pillar and point features are close to low-rank (8 directions hold 99 %
// of the variance of the PointPillars pillar features on KITTI), so most of the distance work is
// skipped; on isotropic data nothing is skipped and the partition costs a few percent.
// Certified bound: G^2 = sum over the d axes of the squared box gaps. With e the largest rounding
// error of a projected coordinate (queries plus refs) and delta >= ||P|| - 1 measured from the
// computed basis, every ref of the leaf has exact |q - r| >= (G - e sqrt(d))_+ / (1 + delta), and
// the contract's float32 distance is >= |q - r|^2 (1 - u)^(C + 2) - (C + 8) FLT_MIN (u = 2^-24:
// one rounding per subtraction, square and addition, plus underflow).
//
// Distances. The refs are centred on their mean and packed once (extra memory: one copy of the
// sample's refs) in the partition's order into panels of kNR rows stored channel-major ([C][kNR]).
// A micro-kernel takes kMR query rows against one panel, computes the dot products q.r of the
// centred vectors and from them
//   L = |q|^2 + |r|^2 - 2 q.r - e,   U = L + 2 e,   e = kappa (|q| + |r|)^2 + tiny,
// with kappa large enough that L <= dist2 <= U for the exact distance of the contract (error
// analysis: dot products, norms, the centring and the exact distance itself each err by at most
// (C + 3) unit roundoffs of (|q| + |r|)^2; kappa takes twice the sum).
// A query keeps candidates (L, U, row) in a buffer; T is an upper bound of its current k-th
// distance. Refs arrive in no particular row order, so a ref is offered when L <= T (with equality
// it may still win a tie by its lower row). When the buffer is full, T shrinks to the k-th
// smallest U and candidates with L > T are dropped; if that frees too little room (near-ties),
// candidates get their exact distance and only the exact top k stay. At the end the survivors'
// exact distances decide the top k and its order (distance, then row), so the result does not
// depend on the visiting order.

constexpr int kMR = 6;           // query rows per micro-kernel (a query block)
constexpr int kNR = 16;          // refs per panel
constexpr int kLeafPanels = 2;   // panels per ref leaf
constexpr int kLeafRows = kLeafPanels * kNR;
constexpr int kGroupBlocks = 4;  // query blocks per work item
constexpr int kMaxProj = 8;      // principal directions of the pruning boxes
// The pruned order needs the refs close to a d-dimensional subspace; below this share of the
// variance along the d leading directions the boxes skip (almost) nothing and the dense order,
// whose larger query groups reuse cached refs longer, is faster (isotropic 64 channels: 2x).
constexpr double kPruneEnergy = 0.9;
constexpr int kChunk = 256;      // dense order: refs per cache-resident chunk
constexpr int kMaxGroup = 192;   // dense order: queries per work item
constexpr float kUnit = 5.9604645e-08f;  // 2^-24, unit roundoff of float32

// Absolute slack of the distance bounds for underflow: (C + 8) FLT_MIN.
inline float underflow_slack(int64_t C) {
  return static_cast<float>(C + 8) * std::numeric_limits<float>::min();
}

struct Candidate {
  float lo, hi;  // bounds of the exact distance (equal once exact)
  int32_t row;   // row within the sample
  int32_t slot;  // row of the reordered copy of the refs; -1 once the distance is exact
};

// Micro-kernel: for rows i < kMR and panel refs j < kNR writes L[i*kNR+j], E[i*kNR+j] and sets bit
// j of masks[i] when L <= T[i].
using MicroKernel = void (*)(const float* q, int64_t C, const float* panel, const float* qn,
                             const float* qnorm, const float* T, const float* rn,
                             const float* rnorm, float kappa, float tiny, float* L, float* E,
                             uint32_t* masks);

void micro_generic(const float* q, int64_t C, const float* panel, const float* qn,
                   const float* qnorm, const float* T, const float* rn, const float* rnorm,
                   float kappa, float tiny, float* L, float* E, uint32_t* masks) {
  float acc[kMR][kNR];
  for (int i = 0; i < kMR; ++i)
    for (int j = 0; j < kNR; ++j) acc[i][j] = 0.0f;
  for (int64_t c = 0; c < C; ++c) {
    const float* pc = panel + c * kNR;
    for (int i = 0; i < kMR; ++i) {
      const float qv = q[i * C + c];
      for (int j = 0; j < kNR; ++j) acc[i][j] += qv * pc[j];
    }
  }
  for (int i = 0; i < kMR; ++i) {
    uint32_t m = 0;
    for (int j = 0; j < kNR; ++j) {
      const float t = qnorm[i] + rnorm[j];
      const float e = kappa * t * t + tiny;
      const float lo = (qn[i] + rn[j]) - 2.0f * acc[i][j] - e;
      L[i * kNR + j] = lo;
      E[i * kNR + j] = e;
      if (lo <= T[i]) m |= 1u << j;
    }
    masks[i] = m;
  }
}

#ifdef PD_KNN_X86_AVX2
__attribute__((target("avx2,fma"))) void micro_avx2(const float* q, int64_t C, const float* panel,
                                                    const float* qn, const float* qnorm,
                                                    const float* T, const float* rn,
                                                    const float* rnorm, float kappa, float tiny,
                                                    float* L, float* E, uint32_t* masks) {
  static_assert(kMR == 6 && kNR == 16, "micro_avx2 is written for a 6 x 16 tile");
  __m256 a00 = _mm256_setzero_ps(), a01 = _mm256_setzero_ps();
  __m256 a10 = _mm256_setzero_ps(), a11 = _mm256_setzero_ps();
  __m256 a20 = _mm256_setzero_ps(), a21 = _mm256_setzero_ps();
  __m256 a30 = _mm256_setzero_ps(), a31 = _mm256_setzero_ps();
  __m256 a40 = _mm256_setzero_ps(), a41 = _mm256_setzero_ps();
  __m256 a50 = _mm256_setzero_ps(), a51 = _mm256_setzero_ps();
  const float* q0 = q;
  const float* q1 = q + C;
  const float* q2 = q + 2 * C;
  const float* q3 = q + 3 * C;
  const float* q4 = q + 4 * C;
  const float* q5 = q + 5 * C;
  for (int64_t c = 0; c < C; ++c) {
    const __m256 r0 = _mm256_loadu_ps(panel + c * kNR);
    const __m256 r1 = _mm256_loadu_ps(panel + c * kNR + 8);
    __m256 b = _mm256_broadcast_ss(q0 + c);
    a00 = _mm256_fmadd_ps(b, r0, a00);
    a01 = _mm256_fmadd_ps(b, r1, a01);
    b = _mm256_broadcast_ss(q1 + c);
    a10 = _mm256_fmadd_ps(b, r0, a10);
    a11 = _mm256_fmadd_ps(b, r1, a11);
    b = _mm256_broadcast_ss(q2 + c);
    a20 = _mm256_fmadd_ps(b, r0, a20);
    a21 = _mm256_fmadd_ps(b, r1, a21);
    b = _mm256_broadcast_ss(q3 + c);
    a30 = _mm256_fmadd_ps(b, r0, a30);
    a31 = _mm256_fmadd_ps(b, r1, a31);
    b = _mm256_broadcast_ss(q4 + c);
    a40 = _mm256_fmadd_ps(b, r0, a40);
    a41 = _mm256_fmadd_ps(b, r1, a41);
    b = _mm256_broadcast_ss(q5 + c);
    a50 = _mm256_fmadd_ps(b, r0, a50);
    a51 = _mm256_fmadd_ps(b, r1, a51);
  }
  const __m256 acc[kMR][2] = {{a00, a01}, {a10, a11}, {a20, a21},
                              {a30, a31}, {a40, a41}, {a50, a51}};
  const __m256 vk = _mm256_set1_ps(kappa), vt = _mm256_set1_ps(tiny), two = _mm256_set1_ps(2.0f);
  const __m256 rn0 = _mm256_loadu_ps(rn), rn1 = _mm256_loadu_ps(rn + 8);
  const __m256 rm0 = _mm256_loadu_ps(rnorm), rm1 = _mm256_loadu_ps(rnorm + 8);
  for (int i = 0; i < kMR; ++i) {
    const __m256 qni = _mm256_set1_ps(qn[i]), qmi = _mm256_set1_ps(qnorm[i]);
    const __m256 ti = _mm256_set1_ps(T[i]);
    uint32_t m = 0;
    for (int h = 0; h < 2; ++h) {
      const __m256 t = _mm256_add_ps(qmi, h ? rm1 : rm0);
      const __m256 e = _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(vk, t), t), vt);
      const __m256 lo = _mm256_sub_ps(
          _mm256_sub_ps(_mm256_add_ps(qni, h ? rn1 : rn0), _mm256_mul_ps(two, acc[i][h])), e);
      _mm256_storeu_ps(L + i * kNR + 8 * h, lo);
      _mm256_storeu_ps(E + i * kNR + 8 * h, e);
      m |= static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(lo, ti, _CMP_LE_OQ))) << (8 * h);
    }
    masks[i] = m;
  }
}
#endif

MicroKernel pick_micro_kernel() {
#ifdef PD_KNN_X86_AVX2
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return micro_avx2;
#endif
  return micro_generic;
}

// Exact distances (the contract) of q to rows[0:n), n <= kExactBatch; independent chains so the
// sequential sums of different rows overlap.
constexpr int kExactBatch = 16;
using ExactBatch = void (*)(const float* q, const float* const* rows, int n, int64_t C,
                            float* out);

void exact_generic(const float* q, const float* const* rows, int n, int64_t C, float* out) {
  for (int h = 0; h < n; h += 8) {
    const float* r[8];
    for (int j = 0; j < 8; ++j) r[j] = rows[h + j < n ? h + j : h];
    float acc[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    for (int64_t c = 0; c < C; ++c) {
      const float qc = q[c];
      for (int j = 0; j < 8; ++j) acc[j] = acc[j] + square_rounded(qc - r[j][c]);
    }
    for (int j = 0; j < 8 && h + j < n; ++j) out[h + j] = acc[j];
  }
}

#ifdef PD_KNN_X86_AVX2
// The same with one row per lane: 8 x 8 blocks of the rows are transposed in registers, and every
// lane rounds its subtraction, square and sum exactly as the scalar code does (the empty asm keeps
// the compiler from contracting the square and the sum into an FMA). Two groups of 8 rows run
// interleaved so that the two dependency chains overlap.
__attribute__((target("avx2,fma"))) inline __m256 exact_step(__m256 acc, __m256 qc, __m256 col) {
  const __m256 t = _mm256_sub_ps(qc, col);
  __m256 p = _mm256_mul_ps(t, t);
  __asm__("" : "+x"(p));
  return _mm256_add_ps(acc, p);
}

// Columns c..c+7 of rows r[0:8): out[i] lane j = r[j][c + i].
__attribute__((target("avx2,fma"))) inline void transpose8(const float* const* r, int64_t c,
                                                           __m256* out) {
  const __m256 v0 = _mm256_loadu_ps(r[0] + c), v1 = _mm256_loadu_ps(r[1] + c);
  const __m256 v2 = _mm256_loadu_ps(r[2] + c), v3 = _mm256_loadu_ps(r[3] + c);
  const __m256 v4 = _mm256_loadu_ps(r[4] + c), v5 = _mm256_loadu_ps(r[5] + c);
  const __m256 v6 = _mm256_loadu_ps(r[6] + c), v7 = _mm256_loadu_ps(r[7] + c);
  const __m256 t0 = _mm256_unpacklo_ps(v0, v1), t1 = _mm256_unpackhi_ps(v0, v1);
  const __m256 t2 = _mm256_unpacklo_ps(v2, v3), t3 = _mm256_unpackhi_ps(v2, v3);
  const __m256 t4 = _mm256_unpacklo_ps(v4, v5), t5 = _mm256_unpackhi_ps(v4, v5);
  const __m256 t6 = _mm256_unpacklo_ps(v6, v7), t7 = _mm256_unpackhi_ps(v6, v7);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  out[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  out[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  out[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  out[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  out[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  out[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  out[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  out[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

__attribute__((target("avx2,fma"))) void exact_avx2(const float* q, const float* const* rows,
                                                    int n, int64_t C, float* out) {
  const float* r[kExactBatch];
  for (int j = 0; j < kExactBatch; ++j) r[j] = rows[j < n ? j : 0];
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  const bool two = n > 8;
  int64_t c = 0;
  __m256 col0[8], col1[8];
  for (; c + 8 <= C; c += 8) {
    transpose8(r, c, col0);
    if (two) transpose8(r + 8, c, col1);
    for (int i = 0; i < 8; ++i) {
      const __m256 qc = _mm256_set1_ps(q[c + i]);
      acc0 = exact_step(acc0, qc, col0[i]);
      if (two) acc1 = exact_step(acc1, qc, col1[i]);
    }
  }
  for (; c < C; ++c) {
    const __m256 qc = _mm256_set1_ps(q[c]);
    acc0 = exact_step(acc0, qc, _mm256_setr_ps(r[0][c], r[1][c], r[2][c], r[3][c], r[4][c],
                                               r[5][c], r[6][c], r[7][c]));
    if (two) {
      acc1 = exact_step(acc1, qc, _mm256_setr_ps(r[8][c], r[9][c], r[10][c], r[11][c], r[12][c],
                                                 r[13][c], r[14][c], r[15][c]));
    }
  }
  alignas(32) float lanes[kExactBatch];
  _mm256_store_ps(lanes, acc0);
  _mm256_store_ps(lanes + 8, acc1);
  for (int j = 0; j < n; ++j) out[j] = lanes[j];
}
#endif

ExactBatch pick_exact_batch() {
#ifdef PD_KNN_X86_AVX2
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return exact_avx2;
#endif
  return exact_generic;
}

// The kth smallest (0-based) of a[0:n), kth < n, by quickselect with branch-free partitions
// (candidate bounds arrive in random order, so compare-and-branch would mispredict half the time).
// a and b are scratch buffers of n floats; both are overwritten.
inline float select_kth(float* a, float* b, int64_t n, int64_t kth) {
  while (n > 16) {
    const float x0 = a[0], x1 = a[n / 2], x2 = a[n - 1];
    const float pivot = std::max(std::min(x0, x1), std::min(std::max(x0, x1), x2));
    int64_t nl = 0, nh = 0;
    for (int64_t j = 0; j < n; ++j) {  // lows stay in a (nl <= j), the rest go to b
      const float x = a[j];
      const bool low = x < pivot;
      a[nl] = x;
      b[nh] = x;
      nl += low;
      nh += !low;
    }
    if (kth < nl) {
      n = nl;
      continue;
    }
    kth -= nl;
    // b holds the values >= pivot; peel off those equal to it (the pivot may be their minimum).
    int64_t ng = 0;
    for (int64_t j = 0; j < nh; ++j) {
      const float x = b[j];
      a[ng] = x;
      ng += x > pivot;
    }
    const int64_t ne = nh - ng;
    if (kth < ne) return pivot;
    kth -= ne;
    n = ng;
  }
  std::nth_element(a, a + kth, a + n);
  return a[kth];
}

// (distance, row) packed into one integer that sorts the same way: exact distances are >= +0,
// and the bit patterns of non-negative floats order like their values.
inline uint64_t rank_key(float d, int32_t row) {
  uint32_t bits;
  std::memcpy(&bits, &d, sizeof(bits));
  return (static_cast<uint64_t>(bits) << 32) | static_cast<uint32_t>(row);
}
inline float key_dist(uint64_t key) {
  const uint32_t bits = static_cast<uint32_t>(key >> 32);
  float d;
  std::memcpy(&d, &bits, sizeof(d));
  return d;
}
inline int32_t key_row(uint64_t key) { return static_cast<int32_t>(key & 0xffffffffu); }

// Sorts keys a[0:n) ascending: an LSD radix sort on the distance bits (the high 32 bits, four
// 8-bit digits, digits shared by every key skipped), then an insertion pass that orders equal
// distances by row (ties are rare, so it rarely moves anything). No data-dependent branches in the
// radix passes: std::sort mispredicts about every second comparison on these keys. tmp: n keys.
void sort_keys(uint64_t* a, uint64_t* tmp, int64_t n) {
  if (n <= 1) return;
  uint32_t hist[4][256];
  std::memset(hist, 0, sizeof(hist));
  for (int64_t j = 0; j < n; ++j) {
    const uint32_t d = static_cast<uint32_t>(a[j] >> 32);
    ++hist[0][d & 0xff];
    ++hist[1][(d >> 8) & 0xff];
    ++hist[2][(d >> 16) & 0xff];
    ++hist[3][d >> 24];
  }
  uint64_t* src = a;
  uint64_t* dst = tmp;
  for (int pass = 0; pass < 4; ++pass) {
    uint32_t* h = hist[pass];
    const int shift = 32 + 8 * pass;
    if (h[(src[0] >> shift) & 0xff] == static_cast<uint32_t>(n)) continue;  // one digit value
    uint32_t sum = 0;
    for (int v = 0; v < 256; ++v) {
      const uint32_t c = h[v];
      h[v] = sum;
      sum += c;
    }
    for (int64_t j = 0; j < n; ++j) dst[h[(src[j] >> shift) & 0xff]++] = src[j];
    std::swap(src, dst);
  }
  if (src != a) std::memcpy(a, src, n * sizeof(uint64_t));
  for (int64_t j = 1; j < n; ++j) {
    const uint64_t x = a[j];
    int64_t i = j;
    while (i > 0 && a[i - 1] > x) {
      a[i] = a[i - 1];
      --i;
    }
    a[i] = x;
  }
}

struct Scratch {
  std::vector<float> values;
  std::vector<uint64_t> keys, tmp;
};

// Per-query candidate buffer and the threshold T (see the block comment above).
class CandidateSet {
 public:
  CandidateSet(Candidate* buf, int64_t cap, int64_t k) : buf_(buf), cap_(cap), k_(k) {}

  float threshold() const { return T_; }

  // Offers a ref whose lower bound passed the micro-kernel's test against an older T. ordered:
  // the refs in slot order.
  void offer(float lo, float hi, int32_t row, int32_t slot, const float* q, const float* ordered,
             int64_t C, Scratch& scratch) {
    if (n_ == cap_) {
      approx_filter(scratch);
      if (n_ > k_ + (cap_ - k_) / 2) exact_select(q, ordered, C, scratch);
    }
    if (lo <= T_) {
      buf_[n_++] = {lo, hi, row, slot};
      // The first k candidates bound the k-th distance by their largest upper bound.
      if (n_ == k_ && T_ == std::numeric_limits<float>::infinity()) {
        float worst = buf_[0].hi;
        for (int64_t j = 1; j < n_; ++j) worst = std::max(worst, buf_[j].hi);
        T_ = worst;
      }
    }
  }

  // Writes the exact top k, ascending by (distance, row), with rows offset by ref_base.
  void finish(const float* q, const float* ordered, int64_t C, Scratch& scratch,
              int64_t ref_base, int64_t* out_idx, float* out_d) {
    approx_filter(scratch);
    exact_select(q, ordered, C, scratch);
    std::vector<uint64_t>& keys = scratch.keys;
    keys.resize(n_);
    for (int64_t j = 0; j < n_; ++j) keys[j] = rank_key(buf_[j].lo, buf_[j].row);
    scratch.tmp.resize(n_);
    sort_keys(keys.data(), scratch.tmp.data(), n_);
    for (int64_t j = 0; j < n_; ++j) {
      out_idx[j] = ref_base + key_row(keys[j]);
      out_d[j] = key_dist(keys[j]);
    }
  }

 private:
  // T = min(T, k-th smallest upper bound); drops candidates whose lower bound exceeds it.
  void approx_filter(Scratch& scratch) {
    if (n_ <= k_) return;
    std::vector<float>& v = scratch.values;
    v.resize(2 * n_);
    for (int64_t j = 0; j < n_; ++j) v[j] = buf_[j].hi;
    T_ = std::min(T_, select_kth(v.data(), v.data() + n_, n_, k_ - 1));
    int64_t w = 0;
    for (int64_t j = 0; j < n_; ++j) {  // branch-free: the keep pattern is unpredictable
      const Candidate c = buf_[j];
      buf_[w] = c;
      w += c.lo <= T_;
    }
    n_ = w;
  }

  // Exact distances for every candidate, then keeps the exact top k; T = the k-th distance.
  void exact_select(const float* q, const float* ordered, int64_t C, Scratch& scratch) {
    static const ExactBatch exact_batch = pick_exact_batch();
    int64_t pending[kExactBatch];
    const float* rows[kExactBatch];
    float d[kExactBatch];
    int n = 0;
    for (int64_t j = 0; j <= n_; ++j) {
      if (j < n_ && buf_[j].slot >= 0) {
        pending[n] = j;
        rows[n] = ordered + static_cast<int64_t>(buf_[j].slot) * C;
        ++n;
      }
      if (n == kExactBatch || (j == n_ && n > 0)) {
        exact_batch(q, rows, n, C, d);
        for (int t = 0; t < n; ++t) buf_[pending[t]] = {d[t], d[t], buf_[pending[t]].row, -1};
        n = 0;
      }
    }
    if (n_ > k_) {
      std::vector<uint64_t>& keys = scratch.keys;
      keys.resize(n_);
      for (int64_t j = 0; j < n_; ++j) keys[j] = rank_key(buf_[j].lo, buf_[j].row);
      std::nth_element(keys.begin(), keys.begin() + (k_ - 1), keys.begin() + n_);
      for (int64_t j = 0; j < k_; ++j) {
        const float dist = key_dist(keys[j]);
        buf_[j] = {dist, dist, key_row(keys[j]), -1};
      }
      n_ = k_;
    }
    if (n_ == k_) {
      float kth = buf_[0].lo;
      for (int64_t j = 1; j < n_; ++j) kth = std::max(kth, buf_[j].lo);
      T_ = std::min(T_, kth);
    }
  }

  Candidate* buf_;
  int64_t cap_, k_;
  int64_t n_ = 0;
  float T_ = std::numeric_limits<float>::infinity();
};

// Principal directions of a sample's refs: basis[c * kMaxProj + j] is component c of the j-th
// direction (largest variance first; columns j >= d are zero), from the covariance of at most 2048
// evenly spaced rows.
struct Projection {
  int d = 0;
  std::vector<double> mean;   // [C] mean of all refs
  std::vector<double> basis;  // [C][kMaxProj]
  double delta = 0.0;         // bound of ||P||_2 - 1 for the computed basis
  double energy = 0.0;        // share of the (sampled) variance along the d directions
};

Projection principal_directions(const float* ref, int64_t nr, int64_t C) {
  Projection pr;
  pr.d = static_cast<int>(std::min<int64_t>(C, kMaxProj));
  pr.mean.assign(C, 0.0);
  for (int64_t j = 0; j < nr; ++j)
    for (int64_t c = 0; c < C; ++c) pr.mean[c] += ref[j * C + c];
  for (int64_t c = 0; c < C; ++c) pr.mean[c] /= static_cast<double>(std::max<int64_t>(nr, 1));
  const int64_t step = std::max<int64_t>(1, nr / 2048);
  const int64_t m = (nr + step - 1) / step;
  at::Tensor x = at::empty({m, C}, at::TensorOptions().dtype(at::kDouble));
  double* xp = x.data_ptr<double>();
  for (int64_t i = 0; i < m; ++i)
    for (int64_t c = 0; c < C; ++c) xp[i * C + c] = ref[i * step * C + c] - pr.mean[c];
  const auto eig = at::linalg_eigh(x.t().mm(x), "L");
  const at::Tensor vals = std::get<0>(eig).contiguous();
  const at::Tensor vecs = std::get<1>(eig).contiguous();
  const double* lp = vals.data_ptr<double>();  // eigenvalues ascending
  const double* vp = vecs.data_ptr<double>();  // [C][C], columns the eigenvectors
  double total = 0.0, top = 0.0;
  for (int64_t j = 0; j < C; ++j) total += std::max(0.0, lp[j]);
  for (int j = 0; j < pr.d; ++j) top += std::max(0.0, lp[C - 1 - j]);
  pr.energy = total > 0.0 ? top / total : 1.0;
  pr.basis.assign(C * kMaxProj, 0.0);
  for (int64_t c = 0; c < C; ++c)
    for (int j = 0; j < pr.d; ++j) pr.basis[c * kMaxProj + j] = vp[c * C + (C - 1 - j)];
  // ||P||^2 = ||P^T P|| <= 1 + d * max |(P^T P - I)_ij| (Gershgorin); generous for the rounding of
  // this check itself.
  double dev = 0.0;
  for (int a = 0; a < pr.d; ++a) {
    for (int b = 0; b < pr.d; ++b) {
      double g = 0.0;
      for (int64_t c = 0; c < C; ++c) g += pr.basis[c * kMaxProj + a] * pr.basis[c * kMaxProj + b];
      dev = std::max(dev, std::abs(g - (a == b ? 1.0 : 0.0)));
    }
  }
  pr.delta = pr.d * dev + 1e-12;
  return pr;
}

// y[i * kMaxProj + j] = sum_c (x[i, c] - mean[c]) basis[c, j] in double; returns the largest bound
// of the rounding error of one coordinate: (C + 2) u_double sum_c |x - mean| (1 + delta), with
// slack.
double project_rows(const float* x, int64_t n, int64_t C, const Projection& pr, double* y) {
  double worst = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    double acc[kMaxProj] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
    double l1 = 0.0;
    for (int64_t c = 0; c < C; ++c) {
      const double v = x[i * C + c] - pr.mean[c];
      l1 += std::abs(v);
      const double* b = pr.basis.data() + c * kMaxProj;
      for (int j = 0; j < kMaxProj; ++j) acc[j] += v * b[j];
    }
    for (int j = 0; j < kMaxProj; ++j) y[i * kMaxProj + j] = acc[j];
    worst = std::max(worst, l1);
  }
  const double u = std::numeric_limits<double>::epsilon() / 2;
  return 1.01 * (C + 2) * u * worst * (1.0 + pr.delta) + std::numeric_limits<double>::min();
}

// Reorders ids (rows of y, stride kMaxProj) by a k-d partition: node [b, e) with e - b > leaf
// splits at the median of its widest projected axis, the left part rounded up to a multiple of
// leaf, so every chunk of `leaf` consecutive ids is one leaf (only the last may be short).
void kd_order(const double* y, int d, int32_t* ids, int64_t b, int64_t e, int64_t leaf) {
  while (e - b > leaf) {
    int axis = 0;
    double best = -1.0;
    for (int j = 0; j < d; ++j) {
      double lo = std::numeric_limits<double>::infinity(), hi = -lo;
      for (int64_t t = b; t < e; ++t) {
        const double v = y[static_cast<int64_t>(ids[t]) * kMaxProj + j];
        lo = std::min(lo, v);
        hi = std::max(hi, v);
      }
      if (hi - lo > best) {
        best = hi - lo;
        axis = j;
      }
    }
    const int64_t mid = b + ((e - b) / 2 + leaf - 1) / leaf * leaf;
    std::nth_element(ids + b, ids + mid, ids + e, [y, d, axis](int32_t p, int32_t q) {
      const double yp = y[static_cast<int64_t>(p) * kMaxProj + axis];
      const double yq = y[static_cast<int64_t>(q) * kMaxProj + axis];
      return yp < yq || (yp == yq && p < q);
    });
    kd_order(y, d, ids, b, mid, leaf);
    b = mid;  // the right part iteratively
  }
}

// Boxes [n_chunks][2][d] (lo then hi) of consecutive chunks of `chunk` ids.
std::vector<double> chunk_boxes(const double* y, int d, const int32_t* ids, int64_t n,
                                int64_t chunk) {
  const int64_t nc = (n + chunk - 1) / chunk;
  std::vector<double> box(nc * 2 * d);
  for (int64_t g = 0; g < nc; ++g) {
    double* lo = box.data() + g * 2 * d;
    double* hi = lo + d;
    for (int j = 0; j < d; ++j) {
      lo[j] = std::numeric_limits<double>::infinity();
      hi[j] = -std::numeric_limits<double>::infinity();
    }
    for (int64_t t = g * chunk; t < std::min(n, (g + 1) * chunk); ++t) {
      const double* v = y + static_cast<int64_t>(ids[t]) * kMaxProj;
      for (int j = 0; j < d; ++j) {
        lo[j] = std::min(lo[j], v[j]);
        hi[j] = std::max(hi[j], v[j]);
      }
    }
  }
  return box;
}

// Squared distance between two boxes ([2][d] each).
inline double box_gap2(const double* a, const double* b, int d) {
  double s = 0.0;
  for (int j = 0; j < d; ++j) {
    const double g = std::max(0.0, std::max(b[j] - a[d + j], a[j] - b[d + j]));
    s += g * g;
  }
  return s;
}

// The certified float32 lower bound (see the block comment) of every distance between two boxes
// whose gap is gap2; compared with T in double.
struct BoxBound {
  double shrink;  // e * sqrt(d)
  double scale;   // (1 - u)^(C + 2) / (1 + delta)^2, rounded down generously
  double tiny;    // (C + 8) FLT_MIN
  double operator()(double gap2) const {
    const double g = std::max(0.0, std::sqrt(gap2) - shrink);
    return g * g * scale - tiny;
  }
};

// How knn_tiled_sample orders and visits a sample's refs and queries.
struct TilePlan {
  bool prune = false;          // visit leaves nearest box first, skip leaves by certified bounds
  int64_t leaf_panels = 1;     // panels per leaf, the unit of visiting (and of cache reuse)
  int64_t group_blocks = 1;    // query blocks of kMR rows per work item
  std::vector<int32_t> rperm;  // refs in visiting order (empty: row order)
  std::vector<int32_t> qperm;  // queries in block order (empty: row order)
  int d = 0;                   // with prune: box dimensions, boxes [2][d] of leaves and blocks
  std::vector<double> leaf_box, block_box, group_box;
  BoxBound bound{0.0, 1.0, 0.0};
};

// The pruned plan (see the block comment above): k-d orders of the projected refs (leaves of
// kLeafRows) and queries (blocks of kMR), their boxes and the certified bound.
TilePlan pruned_plan(const float* query, int64_t nq, const float* ref, int64_t nr, int64_t C,
                     const Projection& proj) {
  TilePlan plan;
  plan.prune = true;
  plan.leaf_panels = kLeafPanels;
  plan.group_blocks = kGroupBlocks;
  plan.d = proj.d;
  std::vector<double> y(std::max(nr, nq) * kMaxProj);
  plan.rperm.resize(nr);
  plan.qperm.resize(nq);
  for (int64_t j = 0; j < nr; ++j) plan.rperm[j] = static_cast<int32_t>(j);
  for (int64_t i = 0; i < nq; ++i) plan.qperm[i] = static_cast<int32_t>(i);
  double err = project_rows(ref, nr, C, proj, y.data());
  kd_order(y.data(), plan.d, plan.rperm.data(), 0, nr, kLeafRows);
  plan.leaf_box = chunk_boxes(y.data(), plan.d, plan.rperm.data(), nr, kLeafRows);
  err += project_rows(query, nq, C, proj, y.data());
  kd_order(y.data(), plan.d, plan.qperm.data(), 0, nq, kMR);
  plan.block_box = chunk_boxes(y.data(), plan.d, plan.qperm.data(), nq, kMR);
  plan.group_box = chunk_boxes(y.data(), plan.d, plan.qperm.data(), nq, kGroupBlocks * kMR);
  plan.bound = BoxBound{err * std::sqrt(static_cast<double>(plan.d)),
                        (1.0 - (C + 4) * static_cast<double>(kUnit)) /
                            ((1.0 + proj.delta) * (1.0 + proj.delta)),
                        static_cast<double>(underflow_slack(C))};
  return plan;
}

// The dense plan: row order, nothing skipped; chunks of kChunk refs stay in cache while groups of
// up to kMaxGroup queries (small enough to feed every thread) pass over them.
TilePlan dense_plan(int64_t nq) {
  TilePlan plan;
  plan.leaf_panels = kChunk / kNR;
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t rows = (nq + 4 * threads - 1) / (4 * threads);
  plan.group_blocks =
      std::min<int64_t>(kMaxGroup / kMR, std::max<int64_t>(1, (rows + kMR - 1) / kMR));
  return plan;
}

void knn_tiled_sample(const float* query, int64_t nq, const float* ref, int64_t nr,
                      int64_t ref_base, int64_t C, int64_t k, const Projection& proj,
                      const TilePlan& plan, int64_t* out_idx, float* out_d) {
  const MicroKernel micro = pick_micro_kernel();
  const float kappa = 4.0f * static_cast<float>(C + 8) * kUnit;
  const float tiny = underflow_slack(C);
  const int d = plan.d;
  const bool rperm = !plan.rperm.empty(), qperm = !plan.qperm.empty();
  const auto ref_row = [&](int64_t slot) -> int64_t { return rperm ? plan.rperm[slot] : slot; };
  const auto query_row = [&](int64_t pos) -> int64_t { return qperm ? plan.qperm[pos] : pos; };

  // Centre on the mean of the sample's refs (distances unchanged, norms and margins shrink) and
  // pack the refs in visiting order: panels of kNR rows channel-major, zero rows after the last
  // one; squared norms and norms per slot. Reordered refs are also copied as given, for the exact
  // distances of candidates (a query's candidates then sit in a few contiguous leaves).
  std::vector<float> mean(C);
  for (int64_t c = 0; c < C; ++c) mean[c] = static_cast<float>(proj.mean[c]);
  const int64_t leaf_rows = plan.leaf_panels * kNR;
  const int64_t num_leaves = (nr + leaf_rows - 1) / leaf_rows;
  const int64_t num_panels = num_leaves * plan.leaf_panels;
  std::unique_ptr<float[]> packed(new float[num_panels * kNR * C]);
  std::unique_ptr<float[]> rn(new float[num_panels * kNR]);
  std::unique_ptr<float[]> rnorm(new float[num_panels * kNR]);
  std::unique_ptr<float[]> copy(rperm ? new float[nr * C] : nullptr);
  const float* ordered = rperm ? copy.get() : ref;
  at::parallel_for(0, num_panels, 64, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      float* panel = packed.get() + p * kNR * C;
      for (int64_t jj = 0; jj < kNR; ++jj) {
        const int64_t slot = p * kNR + jj;
        const float* row = slot < nr ? ref + ref_row(slot) * C : nullptr;
        if (rperm && row != nullptr) std::memcpy(copy.get() + slot * C, row, C * sizeof(float));
        float s = 0.0f;
        for (int64_t c = 0; c < C; ++c) {
          const float v = row != nullptr ? row[c] - mean[c] : 0.0f;
          panel[c * kNR + jj] = v;
          s += v * v;
        }
        rn[slot] = s;
        rnorm[slot] = std::sqrt(s);
      }
    }
  });

  const int64_t num_blocks = (nq + kMR - 1) / kMR;
  const int64_t num_groups = (num_blocks + plan.group_blocks - 1) / plan.group_blocks;
  const int64_t group_rows = plan.group_blocks * kMR;
  const int64_t cap = 2 * k + 64;

  at::parallel_for(0, num_groups, 1, [&](int64_t g0, int64_t g1) {
    std::vector<float> qbuf(group_rows * C), qn(group_rows), qnorm(group_rows), T(group_rows);
    std::vector<Candidate> cand_mem(group_rows * cap);
    std::vector<std::pair<double, int64_t>> heap(plan.prune ? num_leaves : 0);
    Scratch scratch;
    float L[kMR * kNR], E[kMR * kNR];
    uint32_t masks[kMR];
    const auto farther = [](const std::pair<double, int64_t>& a,
                            const std::pair<double, int64_t>& b) { return a > b; };
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t b0 = g * plan.group_blocks;
      const int64_t b1 = std::min(num_blocks, b0 + plan.group_blocks);
      const int64_t rows = (b1 - b0) * kMR;  // slots, padding included
      std::vector<CandidateSet> sets;
      sets.reserve(rows);
      for (int64_t i = 0; i < rows; ++i) sets.emplace_back(cand_mem.data() + i * cap, cap, k);
      for (int64_t i = 0; i < rows; ++i) {
        const int64_t pos = b0 * kMR + i;
        const float* src = pos < nq ? query + query_row(pos) * C : nullptr;
        float s = 0.0f;
        for (int64_t c = 0; c < C; ++c) {
          const float v = src != nullptr ? src[c] - mean[c] : 0.0f;
          qbuf[i * C + c] = v;
          s += v * v;
        }
        qn[i] = s;
        qnorm[i] = std::sqrt(s);
        // Padding rows never offer anything.
        T[i] = src != nullptr ? std::numeric_limits<float>::infinity()
                              : -std::numeric_limits<float>::infinity();
      }
      if (plan.prune) {
        const double* gbox = plan.group_box.data() + g * 2 * d;
        for (int64_t l = 0; l < num_leaves; ++l)
          heap[l] = {box_gap2(gbox, plan.leaf_box.data() + l * 2 * d, d), l};
        std::make_heap(heap.begin(), heap.end(), farther);
      }
      for (int64_t left = num_leaves; left > 0; --left) {
        int64_t leaf = num_leaves - left;  // dense: row order
        const double* lbox = nullptr;
        if (plan.prune) {  // nearest box first; stop once no query can gain from any leaf left
          std::pop_heap(heap.begin(), heap.begin() + left, farther);
          leaf = heap[left - 1].second;
          float tmax = -std::numeric_limits<float>::infinity();
          for (int64_t i = 0; i < rows; ++i) tmax = std::max(tmax, T[i]);
          if (plan.bound(heap[left - 1].first) > static_cast<double>(tmax)) break;
          lbox = plan.leaf_box.data() + leaf * 2 * d;
        }
        for (int64_t bb = b0; bb < b1; ++bb) {
          const int64_t i0 = (bb - b0) * kMR;
          if (plan.prune) {
            float tb = T[i0];
            for (int i = 1; i < kMR; ++i) tb = std::max(tb, T[i0 + i]);
            const double gap2 = box_gap2(plan.block_box.data() + bb * 2 * d, lbox, d);
            if (plan.bound(gap2) > static_cast<double>(tb)) continue;
          }
          for (int64_t p = leaf * plan.leaf_panels; p < (leaf + 1) * plan.leaf_panels; ++p) {
            const int64_t valid = std::min<int64_t>(kNR, nr - p * kNR);
            if (valid <= 0) break;
            micro(qbuf.data() + i0 * C, C, packed.get() + p * kNR * C, qn.data() + i0,
                  qnorm.data() + i0, T.data() + i0, rn.get() + p * kNR, rnorm.get() + p * kNR,
                  kappa, tiny, L, E, masks);
            const uint32_t valid_mask = valid >= kNR ? 0xffffffffu : (1u << valid) - 1u;
            for (int i = 0; i < kMR; ++i) {
              uint32_t m = masks[i] & valid_mask;
              if (m == 0) continue;
              const int64_t qi = i0 + i;
              const float* qrow = query + query_row(b0 * kMR + qi) * C;
              while (m != 0) {
                const int j = __builtin_ctz(m);
                m &= m - 1;
                const float lo = L[i * kNR + j];
                const int64_t slot = p * kNR + j;
                sets[qi].offer(lo, lo + 2.0f * E[i * kNR + j], static_cast<int32_t>(ref_row(slot)),
                               static_cast<int32_t>(slot), qrow, ordered, C, scratch);
              }
              T[qi] = sets[qi].threshold();
            }
          }
        }
      }
      for (int64_t i = 0; i < rows; ++i) {
        const int64_t pos = b0 * kMR + i;
        if (pos >= nq) break;
        const int64_t qrow = query_row(pos);
        sets[i].finish(query + qrow * C, ordered, C, scratch, ref_base, out_idx + qrow * k,
                       out_d + qrow * k);
      }
    }
  });
}

void knn_brute_sample(const float* query, int64_t nq, const float* ref, int64_t nr,
                      int64_t ref_base, int64_t C, int64_t k, int64_t* out_idx, float* out_d) {
  PD_CHECK_VALUE(nr < std::numeric_limits<int32_t>::max() &&
                        nq < std::numeric_limits<int32_t>::max(),
                    "knn: a sample may hold at most 2^31 - 2 query and reference rows, got ", nq,
                    " and ", nr);
  const Projection proj = principal_directions(ref, nr, C);
  const TilePlan plan = proj.energy >= kPruneEnergy && nr > 2 * kLeafRows
                            ? pruned_plan(query, nq, ref, nr, C, proj)
                            : dense_plan(nq);
  knn_tiled_sample(query, nq, ref, nr, ref_base, C, k, proj, plan, out_idx, out_d);
}

std::tuple<at::Tensor, at::Tensor> knn_cpu(const at::Tensor& query, const at::Tensor& ref,
                                           int64_t k, const c10::optional<at::Tensor>& query_offsets,
                                           const c10::optional<at::Tensor>& ref_offsets) {
  const knn_detail::KnnLayout layout =
      knn_detail::check_knn_args(query, ref, k, query_offsets, ref_offsets);
  const at::Tensor q = query.contiguous();
  const at::Tensor r = ref.contiguous();
  const int64_t Q = q.size(0), C = q.size(1);
  at::Tensor idx = at::empty({Q, k}, q.options().dtype(at::kLong));
  at::Tensor dist = at::empty({Q, k}, q.options());
  const float* qp = q.data_ptr<float>();
  const float* rp = r.data_ptr<float>();
  int64_t* ip = idx.data_ptr<int64_t>();
  float* dp = dist.data_ptr<float>();
  for (int64_t b = 0; b < layout.num_samples; ++b) {
    const int64_t q0 = layout.query_offsets[b], q1 = layout.query_offsets[b + 1];
    const int64_t r0 = layout.ref_offsets[b], r1 = layout.ref_offsets[b + 1];
    if (q1 == q0) continue;
    const float* qb = qp + q0 * C;
    const float* rb = rp + r0 * C;
    int64_t* ib = ip + q0 * k;
    float* db = dp + q0 * k;
    switch (C) {
      case 1: knn_kdtree_sample<1>(qb, q1 - q0, rb, r1 - r0, r0, k, ib, db); break;
      case 2: knn_kdtree_sample<2>(qb, q1 - q0, rb, r1 - r0, r0, k, ib, db); break;
      case 3: knn_kdtree_sample<3>(qb, q1 - q0, rb, r1 - r0, r0, k, ib, db); break;
      default: knn_brute_sample(qb, q1 - q0, rb, r1 - r0, r0, C, k, ib, db);
    }
  }
  return {idx, dist};
}

}  // namespace
}  // namespace pointdistiller

TORCH_LIBRARY_IMPL(pointdistiller, CPU, m) { m.impl("knn", &pointdistiller::knn_cpu); }
