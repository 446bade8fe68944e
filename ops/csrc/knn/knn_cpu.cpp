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
  TORCH_CHECK_VALUE(nr < std::numeric_limits<int32_t>::max(),
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
// Tiled brute force (C > 3)
//
// The refs of a sample are centred on their mean and packed once (extra memory: one copy of the
// sample's refs) into panels of kNR rows stored channel-major ([C][kNR]). Groups of queries pass
// over chunks of kChunk refs that stay in cache. A micro-kernel takes kMR query
// rows against one panel, computes the dot products q.r of the centred vectors and from them
//   L = |q|^2 + |r|^2 - 2 q.r - e,   U = L + 2 e,   e = kappa (|q| + |r|)^2 + tiny,
// with kappa large enough that L <= dist2 <= U for the exact distance of the contract (error
// analysis: dot products, norms, the centring and the exact distance itself each err by at most
// (C + 3) unit roundoffs of (|q| + |r|)^2; kappa takes twice the sum).
// A query keeps candidates (L, U, row) in a buffer; T is an upper bound of its current k-th
// distance. Refs are visited in increasing row order, so a new ref can only enter the top k if
// L < T (on equality it would lose the tie to k rows with lower indices). When the buffer is
// full, T shrinks to the k-th smallest U and candidates with L > T are dropped; if that frees too
// little room (near-ties), candidates get their exact distance and only the exact top k stay.
// At the end the survivors' exact distances decide the top k and its order.

constexpr int kMR = 6;        // query rows per micro-kernel
constexpr int kNR = 16;       // refs per panel
constexpr int kChunk = 256;   // refs per cache-resident chunk
constexpr int kMaxGroup = 192;  // queries per work item

struct Candidate {
  float lo, hi;  // bounds of the exact distance (equal once exact)
  int32_t row;   // row within the sample
  int32_t exact;
};

// Micro-kernel: for rows i < kMR and panel refs j < kNR writes L[i*kNR+j], E[i*kNR+j] and sets bit
// j of masks[i] when L < T[i].
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
      if (lo < T[i]) m |= 1u << j;
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
      m |= static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(lo, ti, _CMP_LT_OQ))) << (8 * h);
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

// Exact distances (the contract) of q to rows[0:n), n <= 8; eight independent chains so the
// sequential sums of different rows overlap.
inline void exact_dist2_batch(const float* q, const float* const* rows, int n, int64_t C,
                              float* out) {
  const float* r[8];
  for (int j = 0; j < 8; ++j) r[j] = rows[j < n ? j : 0];
  float acc[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  for (int64_t c = 0; c < C; ++c) {
    const float qc = q[c];
    for (int j = 0; j < 8; ++j) acc[j] = acc[j] + square_rounded(qc - r[j][c]);
  }
  for (int j = 0; j < n; ++j) out[j] = acc[j];
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

struct Scratch {
  std::vector<float> values;
  std::vector<uint64_t> keys;
};

// Per-query candidate buffer and the threshold T (see the block comment above).
class CandidateSet {
 public:
  CandidateSet(Candidate* buf, int64_t cap, int64_t k) : buf_(buf), cap_(cap), k_(k) {}

  float threshold() const { return T_; }

  // Offers a ref whose lower bound passed the micro-kernel's test against an older T.
  void offer(float lo, float hi, int32_t row, const float* q, const float* ref, int64_t C,
             Scratch& scratch) {
    if (n_ == cap_) {
      approx_filter(scratch);
      if (n_ > k_ + (cap_ - k_) / 2) exact_select(q, ref, C, scratch);
    }
    if (lo < T_) buf_[n_++] = {lo, hi, row, 0};
  }

  // Writes the exact top k, ascending by (distance, row), with rows offset by ref_base.
  void finish(const float* q, const float* ref, int64_t C, Scratch& scratch, int64_t ref_base,
              int64_t* out_idx, float* out_d) {
    approx_filter(scratch);
    exact_select(q, ref, C, scratch);
    std::vector<uint64_t>& keys = scratch.keys;
    keys.resize(n_);
    for (int64_t j = 0; j < n_; ++j) keys[j] = rank_key(buf_[j].lo, buf_[j].row);
    std::sort(keys.begin(), keys.begin() + n_);
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
  void exact_select(const float* q, const float* ref, int64_t C, Scratch& scratch) {
    int64_t pending[8];
    const float* rows[8];
    float d[8];
    int n = 0;
    for (int64_t j = 0; j <= n_; ++j) {
      if (j < n_ && !buf_[j].exact) {
        pending[n] = j;
        rows[n] = ref + static_cast<int64_t>(buf_[j].row) * C;
        ++n;
      }
      if (n == 8 || (j == n_ && n > 0)) {
        exact_dist2_batch(q, rows, n, C, d);
        for (int t = 0; t < n; ++t) buf_[pending[t]] = {d[t], d[t], buf_[pending[t]].row, 1};
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
        buf_[j] = {dist, dist, key_row(keys[j]), 1};
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

void knn_brute_sample(const float* query, int64_t nq, const float* ref, int64_t nr,
                      int64_t ref_base, int64_t C, int64_t k, int64_t* out_idx, float* out_d) {
  TORCH_CHECK_VALUE(nr < std::numeric_limits<int32_t>::max(),
                    "knn: a sample may hold at most 2^31 - 2 reference rows, got ", nr);
  const MicroKernel micro = pick_micro_kernel();
  constexpr float kUnit = 5.9604645e-08f;  // 2^-24, unit roundoff of float32
  const float kappa = 4.0f * static_cast<float>(C + 8) * kUnit;
  const float tiny = static_cast<float>(C + 8) * std::numeric_limits<float>::min();

  // Centre on the mean of the sample's refs: distances are unchanged, norms (and the margin) shrink.
  std::vector<double> mean_d(C, 0.0);
  for (int64_t j = 0; j < nr; ++j)
    for (int64_t c = 0; c < C; ++c) mean_d[c] += ref[j * C + c];
  std::vector<float> mean(C);
  for (int64_t c = 0; c < C; ++c) mean[c] = static_cast<float>(mean_d[c] / std::max<int64_t>(nr, 1));

  // Pack the sample's refs once: centred, in panels of kNR rows stored channel-major, zero rows
  // after the last one; squared norms and norms per row.
  const int64_t num_panels = (nr + kNR - 1) / kNR;
  std::unique_ptr<float[]> packed(new float[num_panels * kNR * C]);
  std::unique_ptr<float[]> rn(new float[num_panels * kNR]);
  std::unique_ptr<float[]> rnorm(new float[num_panels * kNR]);
  at::parallel_for(0, num_panels, 64, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      float* panel = packed.get() + p * kNR * C;
      for (int64_t jj = 0; jj < kNR; ++jj) {
        const int64_t j = p * kNR + jj;
        float s = 0.0f;
        for (int64_t c = 0; c < C; ++c) {
          const float v = j < nr ? ref[j * C + c] - mean[c] : 0.0f;
          panel[c * kNR + jj] = v;
          s += v * v;
        }
        rn[j] = s;
        rnorm[j] = std::sqrt(s);
      }
    }
  });

  // Work items: groups of queries, a multiple of kMR, small enough to feed every thread.
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  int64_t group = (nq + 4 * threads - 1) / (4 * threads);
  group = std::min<int64_t>(kMaxGroup, std::max<int64_t>(kMR, (group + kMR - 1) / kMR * kMR));
  const int64_t num_groups = (nq + group - 1) / group;
  const int64_t cap = 2 * k + 64;
  const int64_t panels_per_chunk = kChunk / kNR;

  at::parallel_for(0, num_groups, 1, [&](int64_t g0, int64_t g1) {
    std::vector<float> qbuf(group * C), qn(group), qnorm(group), T(group);
    std::vector<Candidate> cand_mem(group * cap);
    Scratch scratch;
    float L[kMR * kNR], E[kMR * kNR];
    uint32_t masks[kMR];
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t qs = g * group;
      const int64_t nqg = std::min(group, nq - qs);
      const int64_t nqpad = (nqg + kMR - 1) / kMR * kMR;
      std::vector<CandidateSet> sets;
      sets.reserve(nqg);
      for (int64_t i = 0; i < nqg; ++i) sets.emplace_back(cand_mem.data() + i * cap, cap, k);
      for (int64_t i = 0; i < nqpad; ++i) {
        float s = 0.0f;
        for (int64_t c = 0; c < C; ++c) {
          const float v = i < nqg ? query[(qs + i) * C + c] - mean[c] : 0.0f;
          qbuf[i * C + c] = v;
          s += v * v;
        }
        qn[i] = s;
        qnorm[i] = std::sqrt(s);
        // Padding rows never offer anything.
        T[i] = i < nqg ? std::numeric_limits<float>::infinity()
                       : -std::numeric_limits<float>::infinity();
      }
      // Chunks of refs stay in cache while every query block of the group passes over them.
      for (int64_t pc = 0; pc < num_panels; pc += panels_per_chunk) {
        const int64_t pe = std::min(num_panels, pc + panels_per_chunk);
        for (int64_t i0 = 0; i0 < nqpad; i0 += kMR) {
          for (int64_t p = pc; p < pe; ++p) {
            micro(qbuf.data() + i0 * C, C, packed.get() + p * kNR * C, qn.data() + i0,
                  qnorm.data() + i0, T.data() + i0, rn.get() + p * kNR, rnorm.get() + p * kNR,
                  kappa, tiny, L, E, masks);
            for (int i = 0; i < kMR; ++i) {
              uint32_t m = masks[i];
              if (m == 0) continue;
              const int64_t qi = i0 + i;
              while (m != 0) {
                const int j = __builtin_ctz(m);
                m &= m - 1;
                const int64_t row = p * kNR + j;
                if (row >= nr) break;
                const float lo = L[i * kNR + j];
                sets[qi].offer(lo, lo + 2.0f * E[i * kNR + j], static_cast<int32_t>(row),
                               query + (qs + qi) * C, ref, C, scratch);
              }
              T[qi] = sets[qi].threshold();
            }
          }
        }
      }
      for (int64_t i = 0; i < nqg; ++i) {
        sets[i].finish(query + (qs + i) * C, ref, C, scratch, ref_base, out_idx + (qs + i) * k,
                       out_d + (qs + i) * k);
      }
    }
  });
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
