// CPU kernels of pointdistiller::voxelize and voxelize_dynamic (contract in voxelize.h).
//
// Algorithm, in three steps:
//   1. keys (parallel): each point's cell key (z, y, x bit-packed, see VoxelGrid), or the empty
//      key when it is out of range, and a finiteness check of every value of the point;
//   2. assignment (one sequential pass in input order): every key is looked up in a table of
//      voxel ids (4 bytes each): indexed by the key itself when the grid has at most 2^20 cells
//      (PointPillars), else an open-addressing hash map (multiplicative hash, linear probing,
//      load <= 1/8; the key is checked in the small per-voxel key array); a new key gets the next
//      voxel id while ids remain. This pass fixes every voxel id and every point's row, and
//      lists the points to store;
//   3. copies (parallel): the listed points go to their (voxel, row) of the output, and the rows
//      left over in each voxel are zeroed (each output element written once).
// The table and the per-point scratch live in a thread-local workspace reused across calls; the
// hash map is sized by min(points in range, max_voxels), never by the grid; the table is left
// all-empty after each call by clearing only the entries filled. The workspace keeps the size of
// the largest call seen on its thread: about 48 bytes per voxel of min(points in range,
// max_voxels), 20 bytes per point, and 4 bytes per cell for a direct table (at most 4 MiB).
// Output is identical for any thread count.
#include "voxelize/voxelize.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

namespace pointdistiller {
namespace voxelize {
namespace {

constexpr int64_t kGrain = 16384;  // points (or voxels) per parallel chunk

// Hash-map entries per possible voxel: load <= 1/8 keeps probe sequences short, which matters
// most once max_voxels is reached and every new voxel's lookup must run to an empty entry.
constexpr int64_t kTableSlack = 8;

template <typename Key>
constexpr Key kEmpty = ~Key(0);

inline size_t hash_key(uint32_t key, int shift) {
  return static_cast<uint32_t>(key * 0x9E3779B1u) >> shift;
}
inline size_t hash_key(uint64_t key, int shift) {
  return static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> shift);
}

template <typename Key>
struct Workspace {
  std::vector<int32_t> table;       // voxel ids; invariant between calls: every entry -1
  std::vector<Key> point_key;       // [N]
  std::vector<int32_t> copy_src;    // [<= N] stored points, in input order
  std::vector<int64_t> copy_dst;    // [<= N] their row in voxels viewed as [M * max_points, C]
  std::vector<Key> voxel_key;       // [M]
  std::vector<int32_t> voxel_count; // [M] points seen, may exceed max_points
  std::vector<size_t> voxel_entry;  // [M] table entry of the voxel, to clear it afterwards
};

template <typename Key>
Workspace<Key>& workspace() {
  thread_local Workspace<Key> ws;
  return ws;
}

template <typename T>
void reserve_at_least(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

// Step 1 on one block of at most kBlock points: the coordinates are first gathered into
// contiguous arrays so that the arithmetic below vectorises. Returns the points in range and ORs
// into *bad whether any value of the block is not finite. Compiled twice on x86-64 (baseline SSE2
// and AVX2, picked at run time); both give the same bits (IEEE division, no contraction).
constexpr int64_t kBlock = 512;

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define PD_VOXELIZE_AVX2 1
#define PD_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define PD_ALWAYS_INLINE inline
#endif

template <typename Key, int64_t kC>
PD_ALWAYS_INLINE int64_t keys_of_block(const float* points, int64_t nb, int64_t width,
                                       const VoxelGrid& g, Key* keys, int32_t* coords,
                                       bool* bad) {
  const int64_t c = kC > 0 ? kC : width;  // a constant stride lets the gather vectorise
  float qx[kBlock], qy[kBlock], qz[kBlock];
  for (int64_t j = 0; j < nb; ++j) {
    qx[j] = points[j * c];
    qy[j] = points[j * c + 1];
    qz[j] = points[j * c + 2];
  }
  uint32_t non_finite = 0;
  const uint32_t* bits = reinterpret_cast<const uint32_t*>(points);
  for (int64_t k = 0; k < nb * c; ++k) non_finite |= (~bits[k] & 0x7f800000u) == 0u;
  *bad |= non_finite != 0;

  const float lx = g.min[0], ly = g.min[1], lz = g.min[2];
  const float sx = g.size[0], sy = g.size[1], sz = g.size[2];
  const float ux = g.upper[0], uy = g.upper[1], uz = g.upper[2];
  const int by = g.bits[0], bz = g.bits[0] + g.bits[1];
  int32_t ix[kBlock], iy[kBlock], iz[kBlock];
  int64_t valid = 0;
  for (int64_t j = 0; j < nb; ++j) {
    // The float32 operations of spconv: floor((p - min) / size), kept iff in [0, dims). For
    // q >= 0, floor(q) < dims <=> q < dims, and truncation equals floor.
    const float x = (qx[j] - lx) / sx, y = (qy[j] - ly) / sy, z = (qz[j] - lz) / sz;
    const bool in = (x >= 0.f) & (x < ux) & (y >= 0.f) & (y < uy) & (z >= 0.f) & (z < uz);
    ix[j] = in ? static_cast<int32_t>(x) : -1;
    iy[j] = in ? static_cast<int32_t>(y) : -1;
    iz[j] = in ? static_cast<int32_t>(z) : -1;
    valid += in;
  }
  for (int64_t j = 0; j < nb; ++j) {
    keys[j] = ix[j] < 0 ? kEmpty<Key>
                        : (static_cast<Key>(iz[j]) << bz) | (static_cast<Key>(iy[j]) << by) |
                              static_cast<Key>(ix[j]);
  }
  if (coords != nullptr) {
    for (int64_t j = 0; j < nb; ++j) {
      coords[3 * j] = iz[j];
      coords[3 * j + 1] = iy[j];
      coords[3 * j + 2] = ix[j];
    }
  }
  return valid;
}

template <typename Key, int64_t kC>
int64_t keys_of_block_base(const float* points, int64_t nb, int64_t c, const VoxelGrid& g,
                           Key* keys, int32_t* coords, bool* bad) {
  return keys_of_block<Key, kC>(points, nb, c, g, keys, coords, bad);
}

#ifdef PD_VOXELIZE_AVX2
template <typename Key, int64_t kC>
__attribute__((target("avx2"))) int64_t keys_of_block_avx2(const float* points, int64_t nb,
                                                           int64_t c, const VoxelGrid& g,
                                                           Key* keys, int32_t* coords,
                                                           bool* bad) {
  return keys_of_block<Key, kC>(points, nb, c, g, keys, coords, bad);
}
#endif

// The block kernel for this feature count and CPU.
template <typename Key, int64_t kC>
auto pick_keys_kernel() {
#ifdef PD_VOXELIZE_AVX2
  if (__builtin_cpu_supports("avx2")) return &keys_of_block_avx2<Key, kC>;
#endif
  return &keys_of_block_base<Key, kC>;
}

template <typename Key>
auto pick_keys_kernel(int64_t c) {
  switch (c) {
    case 3: return pick_keys_kernel<Key, 3>();
    case 4: return pick_keys_kernel<Key, 4>();
    case 5: return pick_keys_kernel<Key, 5>();
    default: return pick_keys_kernel<Key, 0>();
  }
}

// Step 1. Writes keys[i] (kEmpty when out of range) and, when coords != nullptr, the point's
// (z, y, x) cell or -1s. Returns the number of points in range; sets *bad if any value is not
// finite.
template <typename Key>
int64_t compute_keys(const float* points, int64_t n, int64_t c, const VoxelGrid& g, Key* keys,
                     int32_t* coords, bool* bad) {
  const auto keys_of = pick_keys_kernel<Key>(c);
  std::atomic<int64_t> valid_total{0};
  std::atomic<bool> any_bad{false};
  at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
    int64_t valid = 0;
    bool chunk_bad = false;
    for (int64_t b = begin; b < end; b += kBlock) {
      const int64_t nb = std::min(kBlock, end - b);
      valid += keys_of(points + b * c, nb, c, g, keys + b,
                      coords == nullptr ? nullptr : coords + 3 * b, &chunk_bad);
    }
    valid_total += valid;
    if (chunk_bad) any_bad = true;
  });
  *bad = any_bad.load();
  return valid_total.load();
}

// Step 2. Numbers voxels by first appearance and writes point_to_voxel. With kStore, also lists
// the points to store (ws.copy_src, ws.copy_dst: the first max_points of each voxel) and their
// number in *stored. Returns M.
// kDirect: the table has one entry per key (grids of at most 2^kDirectKeyBits cells, such as
// PointPillars' 432 x 496 x 1): no hashing and no probing, the key is the entry.
template <typename Key, bool kStore, bool kDirect>
int32_t assign_voxels(const Key* keys, int64_t n, int64_t max_voxels, int64_t max_points,
                      int64_t capacity, int grid_key_bits, Workspace<Key>& ws,
                      int64_t* point_to_voxel, int64_t* stored) {
  const int key_bits = static_cast<int>(sizeof(Key) * 8);
  int bits = 4;
  if (kDirect) {
    bits = grid_key_bits;
  } else {
    while (bits < key_bits && (int64_t{1} << bits) < kTableSlack * capacity) ++bits;
  }
  const size_t mask = (size_t{1} << bits) - 1;
  const int shift = key_bits - bits;
  if (ws.table.size() < mask + 1) ws.table.assign(mask + 1, -1);
  reserve_at_least(ws.voxel_key, capacity);
  reserve_at_least(ws.voxel_count, capacity);
  reserve_at_least(ws.voxel_entry, capacity);
  int32_t* table = ws.table.data();
  Key* voxel_key = ws.voxel_key.data();
  int32_t* voxel_count = ws.voxel_count.data();
  size_t* voxel_entry = ws.voxel_entry.data();
  int32_t* copy_src = ws.copy_src.data();
  int64_t* copy_dst = ws.copy_dst.data();
  int64_t num_stored = 0;

  int32_t num_voxels = 0;
  for (int64_t i = 0; i < n; ++i) {
    const Key key = keys[i];
    int32_t voxel = -1;
    if (key != kEmpty<Key>) {
      size_t e = kDirect ? static_cast<size_t>(key) : hash_key(key, shift);
      while (true) {
        const int32_t held = table[e];
        if (held < 0) {
          if (num_voxels < max_voxels) {
            voxel = num_voxels++;
            table[e] = voxel;
            voxel_key[voxel] = key;
            voxel_count[voxel] = 0;
            voxel_entry[voxel] = e;
          }
          break;
        }
        if (kDirect || voxel_key[held] == key) {
          voxel = held;
          break;
        }
        e = (e + 1) & mask;
      }
    }
    point_to_voxel[i] = voxel;
    if (kStore && voxel >= 0) {
      const int32_t row = voxel_count[voxel]++;
      copy_src[num_stored] = static_cast<int32_t>(i);
      copy_dst[num_stored] = static_cast<int64_t>(voxel) * max_points + row;
      num_stored += row < max_points;
    }
  }
  if (kStore) *stored = num_stored;
  for (int32_t v = 0; v < num_voxels; ++v) table[voxel_entry[v]] = -1;
  return num_voxels;
}

constexpr int kDirectKeyBits = 20;   // a direct table of at most 4 MiB

template <typename Key, bool kStore>
int32_t assign(const Key* keys, int64_t n, int64_t max_voxels, int64_t max_points,
               int64_t capacity, const VoxelGrid& g, Workspace<Key>& ws, int64_t* point_to_voxel,
               int64_t* stored) {
  if (g.key_bits() <= kDirectKeyBits) {
    return assign_voxels<Key, kStore, true>(keys, n, max_voxels, max_points, capacity,
                                            g.key_bits(), ws, point_to_voxel, stored);
  }
  return assign_voxels<Key, kStore, false>(keys, n, max_voxels, max_points, capacity,
                                           g.key_bits(), ws, point_to_voxel, stored);
}

// (z, y, x) of each of the first m voxel keys.
template <typename Key>
void decode_keys(const Key* keys, int64_t m, const VoxelGrid& g, int32_t* coords) {
  const int by = g.bits[0], bz = g.bits[0] + g.bits[1];
  const Key mx = (Key{1} << g.bits[0]) - 1, my = (Key{1} << g.bits[1]) - 1;
  for (int64_t v = 0; v < m; ++v) {
    coords[3 * v] = static_cast<int32_t>(keys[v] >> bz);
    coords[3 * v + 1] = static_cast<int32_t>((keys[v] >> by) & my);
    coords[3 * v + 2] = static_cast<int32_t>(keys[v] & mx);
  }
}

// Step 3. out[dst[k]] = points[src[k]] for rows of c floats (fixed-size copies for common c).
template <int64_t kC>
void copy_rows(const float* points, int64_t c, const int32_t* src, const int64_t* dst,
               int64_t count, float* out) {
  const int64_t width = kC > 0 ? kC : c;
  at::parallel_for(0, count, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const float* from = points + src[k] * width;
      float* to = out + dst[k] * width;
      for (int64_t j = 0; j < width; ++j) to[j] = from[j];
    }
  });
}

void copy_points(const float* points, int64_t c, const int32_t* src, const int64_t* dst,
                 int64_t count, float* out) {
  switch (c) {
    case 3: return copy_rows<3>(points, c, src, dst, count, out);
    case 4: return copy_rows<4>(points, c, src, dst, count, out);
    case 5: return copy_rows<5>(points, c, src, dst, count, out);
    default: return copy_rows<0>(points, c, src, dst, count, out);
  }
}

// Rows [num[v], max_points) of every voxel become zeros.
void zero_padding(const int32_t* num, int64_t m, int64_t max_points, int64_t c, float* out) {
  at::parallel_for(0, m, std::max<int64_t>(1, kGrain / max_points), [&](int64_t v0, int64_t v1) {
    for (int64_t v = v0; v < v1; ++v) {
      float* row = out + (v * max_points + num[v]) * c;
      std::memset(row, 0, sizeof(float) * (max_points - num[v]) * c);
    }
  });
}

template <typename Key>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> voxelize_impl(
    const at::Tensor& points, const VoxelGrid& g, int64_t max_points, int64_t max_voxels) {
  const int64_t n = points.size(0), c = points.size(1);
  const float* pts = points.data_ptr<float>();
  Workspace<Key>& ws = workspace<Key>();
  reserve_at_least(ws.point_key, n);
  bool bad = false;
  const int64_t in_range = compute_keys<Key>(pts, n, c, g, ws.point_key.data(), nullptr, &bad);
  if (bad) throw_non_finite(points);

  at::Tensor point_to_voxel = at::empty({n}, points.options().dtype(at::kLong));
  reserve_at_least(ws.copy_src, in_range);
  reserve_at_least(ws.copy_dst, in_range);
  int64_t stored = 0;
  const int32_t m = assign<Key, true>(ws.point_key.data(), n, max_voxels, max_points,
                                      std::min(in_range, max_voxels), g, ws,
                                      point_to_voxel.data_ptr<int64_t>(), &stored);

  // Not zeroed here: the copies fill rows [0, count) of each voxel and zero_padding the rest, so
  // every element is written once (a zero fill first would write the stored rows twice).
  at::Tensor voxels = at::empty({m, max_points, c}, points.options());
  at::Tensor coords = at::empty({m, 3}, points.options().dtype(at::kInt));
  at::Tensor num_points = at::empty({m}, points.options().dtype(at::kInt));
  decode_keys<Key>(ws.voxel_key.data(), m, g, coords.data_ptr<int32_t>());
  int32_t* num = num_points.data_ptr<int32_t>();
  const int32_t* count = ws.voxel_count.data();
  for (int32_t v = 0; v < m; ++v) num[v] = std::min<int32_t>(count[v], max_points);
  copy_points(pts, c, ws.copy_src.data(), ws.copy_dst.data(), stored, voxels.data_ptr<float>());
  zero_padding(num, m, max_points, c, voxels.data_ptr<float>());
  return {voxels, coords, num_points, point_to_voxel};
}

template <typename Key>
std::tuple<at::Tensor, at::Tensor, at::Tensor> voxelize_dynamic_impl(const at::Tensor& points,
                                                                     const VoxelGrid& g) {
  const int64_t n = points.size(0), c = points.size(1);
  Workspace<Key>& ws = workspace<Key>();
  reserve_at_least(ws.point_key, n);
  at::Tensor point_coords = at::empty({n, 3}, points.options().dtype(at::kInt));
  bool bad = false;
  const int64_t in_range = compute_keys<Key>(points.data_ptr<float>(), n, c, g,
                                             ws.point_key.data(),
                                             point_coords.data_ptr<int32_t>(), &bad);
  if (bad) throw_non_finite(points);
  at::Tensor point_to_voxel = at::empty({n}, points.options().dtype(at::kLong));
  const int32_t m = assign<Key, false>(ws.point_key.data(), n, n, 1, in_range, g, ws,
                                       point_to_voxel.data_ptr<int64_t>(), nullptr);
  at::Tensor voxel_coords = at::empty({m, 3}, points.options().dtype(at::kInt));
  decode_keys<Key>(ws.voxel_key.data(), m, g, voxel_coords.data_ptr<int32_t>());
  return {point_coords, voxel_coords, point_to_voxel};
}

bool small_keys(const VoxelGrid& g) { return g.key_bits() <= kSmallKeyBits; }

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> voxelize_cpu(
    const at::Tensor& points, c10::ArrayRef<double> voxel_size,
    c10::ArrayRef<double> point_range, int64_t max_points, int64_t max_voxels) {
  const VoxelGrid g = make_grid(points, voxel_size, point_range);
  check_limits(max_points, max_voxels);
  const at::Tensor pts = points.contiguous();
  return small_keys(g) ? voxelize_impl<uint32_t>(pts, g, max_points, max_voxels)
                       : voxelize_impl<uint64_t>(pts, g, max_points, max_voxels);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> voxelize_dynamic_cpu(
    const at::Tensor& points, c10::ArrayRef<double> voxel_size,
    c10::ArrayRef<double> point_range) {
  const VoxelGrid g = make_grid(points, voxel_size, point_range);
  const at::Tensor pts = points.contiguous();
  return small_keys(g) ? voxelize_dynamic_impl<uint32_t>(pts, g)
                       : voxelize_dynamic_impl<uint64_t>(pts, g);
}

}  // namespace
}  // namespace voxelize
}  // namespace pointdistiller

TORCH_LIBRARY_IMPL(pointdistiller, CPU, m) {
  m.impl("voxelize", &pointdistiller::voxelize::voxelize_cpu);
  m.impl("voxelize_dynamic", &pointdistiller::voxelize::voxelize_dynamic_cpu);
}
