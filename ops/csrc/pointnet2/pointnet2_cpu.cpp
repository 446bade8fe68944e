// CPU kernels of the PointNet++ ops (contracts in pointnet2.h).
//
// furthest_point_sample: exact D-FPS with pruning. A sample's points are ordered into leaves of at
//   most 32 by median splits on the widest axis, each leaf with its bounding box and the largest
//   min-distance of its points (and the lowest row index holding it). A new pick updates a leaf
//   only when a certified lower bound of the contract's float32 distance from the pick to the
//   leaf's box is below that largest min-distance: otherwise no point of the leaf can get closer.
//   The next pick is the leaf maximum with the largest value, ties to the lowest row. The picks
//   are those of the plain O(N * S) loop, since every min-distance that could change is updated.
// ball_query: the sample's points sorted by a grid of cells slightly larger than the radius; a
//   center scans the 9 (x, y) columns around it (3 cells each, contiguous in the sorted order),
//   keeps the rows with d2 < r2 and takes the nsample lowest.
// The others loop plainly; the backward ops sum in (m, k) / (n, j) order per channel range, so
//   they are deterministic. Parallel over samples, centers, rows, boxes or channel ranges.
#include "common/check.h"
#include "pointnet2/pointnet2.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

namespace pointdistiller {
namespace pointnet2 {
namespace {

constexpr int64_t kLeafSize = 32;

std::vector<int64_t> host_offsets(const at::Tensor& offsets) {
  const at::Tensor o = offsets.contiguous();
  return std::vector<int64_t>(o.data_ptr<int64_t>(), o.data_ptr<int64_t>() + o.numel());
}

// ---------------------------------------------------------------------------------------------
// furthest point sampling
// ---------------------------------------------------------------------------------------------
struct Leaf {
  int64_t begin, end;      // range in the leaf-ordered arrays
  float lo[3], hi[3];      // bounding box
  float best;              // largest min-distance of its points
  int64_t best_row;        // lowest local row holding it
};

// Orders rows [begin, end) of `order` into leaves by median splits on the widest axis.
void build_leaves(const float* xyz, std::vector<int64_t>& order, int64_t begin, int64_t end,
                  std::vector<Leaf>& leaves) {
  float lo[3] = {std::numeric_limits<float>::max(), std::numeric_limits<float>::max(),
                 std::numeric_limits<float>::max()};
  float hi[3] = {-std::numeric_limits<float>::max(), -std::numeric_limits<float>::max(),
                 -std::numeric_limits<float>::max()};
  for (int64_t i = begin; i < end; ++i) {
    const float* p = xyz + order[i] * 3;
    for (int d = 0; d < 3; ++d) {
      lo[d] = std::min(lo[d], p[d]);
      hi[d] = std::max(hi[d], p[d]);
    }
  }
  if (end - begin <= kLeafSize) {
    Leaf leaf{begin, end, {lo[0], lo[1], lo[2]}, {hi[0], hi[1], hi[2]},
              std::numeric_limits<float>::infinity(), 0};
    leaves.push_back(leaf);
    return;
  }
  int axis = 0;
  for (int d = 1; d < 3; ++d) {
    if (hi[d] - lo[d] > hi[axis] - lo[axis]) axis = d;
  }
  const int64_t mid = begin + (end - begin) / 2;
  std::nth_element(order.begin() + begin, order.begin() + mid, order.begin() + end,
                   [&](int64_t a, int64_t b) {
                     const float va = xyz[a * 3 + axis], vb = xyz[b * 3 + axis];
                     return va < vb || (va == vb && a < b);
                   });
  build_leaves(xyz, order, begin, mid, leaves);
  build_leaves(xyz, order, mid, end, leaves);
}

// A lower bound of the contract's float32 d2 from p to any point in the box: the exact squared
// box distance in double, shrunk by far more than the float evaluation can lose (each of the
// rounded steps loses at most a relative 2^-24 of non-negative terms).
double box_lower_bound(const float* p, const Leaf& leaf) {
  double s = 0.0;
  for (int d = 0; d < 3; ++d) {
    double g = 0.0;
    if (p[d] < leaf.lo[d]) g = static_cast<double>(leaf.lo[d]) - p[d];
    if (p[d] > leaf.hi[d]) g = static_cast<double>(p[d]) - leaf.hi[d];
    s += g * g;
  }
  return s * (1.0 - 1e-6);
}

void refresh_best(Leaf& leaf, const float* mind, const int64_t* rows) {
  float best = -1.0f;
  int64_t best_row = 0;
  for (int64_t i = leaf.begin; i < leaf.end; ++i) {
    if (mind[i] > best || (mind[i] == best && rows[i] < best_row)) {
      best = mind[i];
      best_row = rows[i];
    }
  }
  leaf.best = best;
  leaf.best_row = best_row;
}

void fps_sample(const float* xyz, int64_t n, int64_t count, int64_t base, int64_t* out) {
  if (count == 0) return;
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::vector<Leaf> leaves;
  build_leaves(xyz, order, 0, n, leaves);
  std::vector<float> pts(n * 3);
  for (int64_t i = 0; i < n; ++i) {
    for (int d = 0; d < 3; ++d) pts[i * 3 + d] = xyz[order[i] * 3 + d];
  }
  std::vector<float> mind(n, std::numeric_limits<float>::infinity());
  for (Leaf& leaf : leaves) leaf.best_row = *std::min_element(order.begin() + leaf.begin,
                                                               order.begin() + leaf.end);
  int64_t pick = 0;
  for (int64_t s = 0; s < count; ++s) {
    out[s] = base + pick;
    const float* p = xyz + pick * 3;
    for (Leaf& leaf : leaves) {
      if (box_lower_bound(p, leaf) >= static_cast<double>(leaf.best)) continue;
      bool changed = false;
      for (int64_t i = leaf.begin; i < leaf.end; ++i) {
        const float d = dist2(p, &pts[i * 3]);
        if (d < mind[i]) {
          mind[i] = d;
          changed = true;
        }
      }
      if (changed) refresh_best(leaf, mind.data(), order.data());
    }
    const Leaf* top = &leaves[0];
    for (const Leaf& leaf : leaves) {
      if (leaf.best > top->best || (leaf.best == top->best && leaf.best_row < top->best_row)) {
        top = &leaf;
      }
    }
    pick = top->best_row;
  }
}

at::Tensor furthest_point_sample_cpu(const at::Tensor& points_in, const at::Tensor& offsets,
                                     const at::Tensor& counts_in) {
  check_fps_args(points_in, offsets, counts_in);
  const at::Tensor points = points_in.contiguous();
  const std::vector<int64_t> off = host_offsets(offsets);
  const std::vector<int64_t> counts = host_offsets(counts_in);
  std::vector<int64_t> out_off(counts.size() + 1, 0);
  for (size_t b = 0; b < counts.size(); ++b) out_off[b + 1] = out_off[b] + counts[b];
  at::Tensor out = at::empty({out_off.back()}, points.options().dtype(at::kLong));
  const float* xyz = points.data_ptr<float>();
  int64_t* o = out.data_ptr<int64_t>();
  at::parallel_for(0, static_cast<int64_t>(counts.size()), 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      fps_sample(xyz + off[b] * 3, off[b + 1] - off[b], counts[b], off[b], o + out_off[b]);
    }
  });
  return out;
}

// ---------------------------------------------------------------------------------------------
// ball query
// ---------------------------------------------------------------------------------------------
// Points sorted by cell (x-major, then y, then z), with their coordinates copied in that order so
// that a center's scan reads memory sequentially. The cells of one (x, y) column are contiguous in
// that order, so a center visits 9 row ranges. With a dense table of cell starts (when the grid is
// small enough) a range costs two loads; otherwise two binary searches over the sorted keys.
struct CellGrid {
  double lo[3];
  double cell;
  int64_t dims[3];
  std::vector<int64_t> keys;    // sorted cell keys, one per finite point
  std::vector<int64_t> rows;    // local rows in key order, ascending within a cell
  std::vector<float> xyz;       // coordinates in key order
  std::vector<int64_t> start;   // dense: first sorted position of each key (size cells + 1)

  int64_t key(int64_t cx, int64_t cy, int64_t cz) const {
    return (cx * dims[1] + cy) * dims[2] + cz;
  }
  int64_t coord(double v, int d) const {
    // far outside (or NaN): clamped in double before the cast, so that the cast is defined
    const double c = std::floor((v - lo[d]) / cell);
    if (!(c >= -1.0)) return -1;
    return c >= static_cast<double>(dims[d]) ? dims[d] : static_cast<int64_t>(c);
  }
  // sorted positions [begin, end) of the keys k0..k1 (inclusive)
  std::pair<int64_t, int64_t> range(int64_t k0, int64_t k1) const {
    if (!start.empty()) return {start[k0], start[k1 + 1]};
    const auto b = std::lower_bound(keys.begin(), keys.end(), k0);
    const auto e = std::upper_bound(b, keys.end(), k1);
    return {b - keys.begin(), e - keys.begin()};
  }
};

CellGrid make_grid(const float* xyz, int64_t n, double radius) {
  CellGrid g;
  // A non-finite point is never within the radius (its d2 is NaN or inf): it stays off the grid.
  std::vector<int64_t> finite;
  finite.reserve(n);
  double hi[3];
  for (int d = 0; d < 3; ++d) {
    g.lo[d] = std::numeric_limits<double>::max();
    hi[d] = -std::numeric_limits<double>::max();
  }
  for (int64_t i = 0; i < n; ++i) {
    const float* p = xyz + i * 3;
    if (!(std::isfinite(p[0]) && std::isfinite(p[1]) && std::isfinite(p[2]))) continue;
    finite.push_back(i);
    for (int d = 0; d < 3; ++d) {
      g.lo[d] = std::min(g.lo[d], static_cast<double>(p[d]));
      hi[d] = std::max(hi[d], static_cast<double>(p[d]));
    }
  }
  if (finite.empty()) {
    for (int d = 0; d < 3; ++d) g.lo[d] = hi[d] = 0.0;
  }
  // a little larger than the radius, so that a row with d2 < r2 is never two cells away; and at
  // least a millionth of the widest extent, so that cell numbers and keys stay far from overflow
  double extent = 0.0;
  for (int d = 0; d < 3; ++d) extent = std::max(extent, hi[d] - g.lo[d]);
  g.cell = std::max(radius * (1.0 + 1e-5), extent * 1e-6);
  for (int d = 0; d < 3; ++d) {
    g.lo[d] -= g.cell;   // room for the neighbours of border cells
    g.dims[d] = static_cast<int64_t>(std::floor((hi[d] - g.lo[d]) / g.cell)) + 3;
  }
  const int64_t m = static_cast<int64_t>(finite.size());
  std::vector<int64_t> point_key(m);
  for (int64_t j = 0; j < m; ++j) {
    const float* p = xyz + finite[j] * 3;
    point_key[j] = g.key(g.coord(p[0], 0), g.coord(p[1], 1), g.coord(p[2], 2));
  }
  g.keys.resize(m);
  g.rows.resize(m);
  g.xyz.resize(m * 3);
  // A small grid gets the dense start table and a counting sort (stable: rows ascend within a
  // cell); a large sparse one a comparison sort of (key, row) and binary searches.
  std::vector<int64_t> order(m);
  const double cells = static_cast<double>(g.dims[0]) * g.dims[1] * g.dims[2];
  if (cells <= std::max<double>(32.0 * m, 1 << 18)) {
    g.start.assign(static_cast<size_t>(cells) + 1, 0);
    for (int64_t j = 0; j < m; ++j) ++g.start[point_key[j] + 1];
    for (size_t k = 1; k < g.start.size(); ++k) g.start[k] += g.start[k - 1];
    std::vector<int64_t> next(g.start.begin(), g.start.end() - 1);
    for (int64_t j = 0; j < m; ++j) order[next[point_key[j]]++] = j;
  } else {
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int64_t u, int64_t v) {
      return point_key[u] < point_key[v] || (point_key[u] == point_key[v] && u < v);
    });
  }
  for (int64_t i = 0; i < m; ++i) {
    const int64_t j = order[i];
    g.keys[i] = point_key[j];
    g.rows[i] = finite[j];
    for (int d = 0; d < 3; ++d) g.xyz[i * 3 + d] = xyz[finite[j] * 3 + d];
  }
  return g;
}

std::tuple<at::Tensor, at::Tensor> ball_query_cpu(const at::Tensor& points_in,
                                                   const at::Tensor& offsets,
                                                   const at::Tensor& centers_in,
                                                   const at::Tensor& center_offsets,
                                                   double radius, int64_t nsample) {
  check_ball_query_args(points_in, offsets, centers_in, center_offsets, radius, nsample);
  const at::Tensor points = points_in.contiguous(), centers = centers_in.contiguous();
  const std::vector<int64_t> off = host_offsets(offsets), coff = host_offsets(center_offsets);
  const int64_t m = centers.size(0);
  at::Tensor idx = at::empty({m, nsample}, points.options().dtype(at::kLong));
  at::Tensor count = at::zeros({m}, points.options().dtype(at::kLong));
  const float r2 = static_cast<float>(radius) * static_cast<float>(radius);
  const float* xyz = points.data_ptr<float>();
  const float* cxyz = centers.data_ptr<float>();
  int64_t* out = idx.data_ptr<int64_t>();
  int64_t* cnt = count.data_ptr<int64_t>();
  for (size_t b = 0; b + 1 < off.size(); ++b) {
    const int64_t c0 = coff[b], c1 = coff[b + 1];
    if (c1 == c0) continue;
    const int64_t base = off[b], n = off[b + 1] - off[b];
    const CellGrid grid = make_grid(xyz + base * 3, n, radius);
    const float* gxyz = grid.xyz.data();
    const int64_t* grows = grid.rows.data();
    at::parallel_for(c0, c1, 64, [&](int64_t m0, int64_t m1) {
      std::vector<int64_t> found;
      for (int64_t c = m0; c < m1; ++c) {
        const float* q = cxyz + c * 3;
        found.clear();
        const int64_t gx = grid.coord(q[0], 0), gy = grid.coord(q[1], 1), gz = grid.coord(q[2], 2);
        const int64_t z0 = std::max<int64_t>(gz - 1, 0), z1 = std::min(gz + 1, grid.dims[2] - 1);
        if (z0 <= z1) {
          for (int64_t x = std::max<int64_t>(gx - 1, 0); x <= std::min(gx + 1, grid.dims[0] - 1);
               ++x) {
            for (int64_t y = std::max<int64_t>(gy - 1, 0);
                 y <= std::min(gy + 1, grid.dims[1] - 1); ++y) {
              const auto [i0, i1] = grid.range(grid.key(x, y, z0), grid.key(x, y, z1));
              for (int64_t i = i0; i < i1; ++i) {
                if (dist2(gxyz + i * 3, q) < r2) found.push_back(grows[i]);
              }
            }
          }
        }
        const int64_t take = std::min<int64_t>(nsample, static_cast<int64_t>(found.size()));
        std::partial_sort(found.begin(), found.begin() + take, found.end());
        int64_t* o = out + c * nsample;
        for (int64_t s = 0; s < take; ++s) o[s] = base + found[s];
        const int64_t fill = take > 0 ? base + found[0] : base;
        for (int64_t s = take; s < nsample; ++s) o[s] = fill;
        cnt[c] = take;
      }
    });
  }
  return {idx, count};
}

// ---------------------------------------------------------------------------------------------
// grouping and interpolation
// ---------------------------------------------------------------------------------------------
at::Tensor group_points_cpu(const at::Tensor& features_in, const at::Tensor& idx_in) {
  check_group_args(features_in, idx_in);
  const at::Tensor f = features_in.contiguous(), idx = idx_in.contiguous();
  const int64_t m = idx.size(0), k = idx.size(1), c = f.size(1);
  at::Tensor out = at::empty({m, c, k}, f.options());
  const float* fp = f.data_ptr<float>();
  const int64_t* ip = idx.data_ptr<int64_t>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, m, 16, [&](int64_t m0, int64_t m1) {
    for (int64_t i = m0; i < m1; ++i) {
      for (int64_t j = 0; j < k; ++j) {
        const float* row = fp + ip[i * k + j] * c;
        for (int64_t ch = 0; ch < c; ++ch) op[(i * c + ch) * k + j] = row[ch];
      }
    }
  });
  return out;
}

at::Tensor group_points_backward_cpu(const at::Tensor& grad_in, const at::Tensor& idx_in,
                                     int64_t num_rows) {
  check_index(idx_in, num_rows, grad_in, "group_points_backward");
  PD_CHECK_TYPE(grad_in.scalar_type() == at::kFloat, "group_points_backward: grad must be float32");
  PD_CHECK_VALUE(grad_in.dim() == 3 && grad_in.size(0) == idx_in.size(0) &&
                     grad_in.size(2) == idx_in.size(1),
                 "group_points_backward: grad must be [M, C, K] with [M, K] = idx.shape = ",
                 idx_in.sizes(), ", got ", grad_in.sizes());
  const at::Tensor g = grad_in.contiguous(), idx = idx_in.contiguous();
  const int64_t m = idx.size(0), k = idx.size(1), c = g.size(1);
  at::Tensor out = at::zeros({num_rows, c}, g.options());
  const float* gp = g.data_ptr<float>();
  const int64_t* ip = idx.data_ptr<int64_t>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, c, 1, [&](int64_t c0, int64_t c1) {   // channel ranges: (m, k) order kept
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t ch = c0; ch < c1; ++ch) {
        const float* gr = gp + (i * c + ch) * k;
        for (int64_t j = 0; j < k; ++j) op[ip[i * k + j] * c + ch] += gr[j];
      }
    }
  });
  return out;
}

at::Tensor three_interpolate_cpu(const at::Tensor& features_in, const at::Tensor& idx_in,
                                 const at::Tensor& weight_in) {
  check_three_interpolate_args(features_in, idx_in, weight_in);
  const at::Tensor f = features_in.contiguous(), idx = idx_in.contiguous();
  const at::Tensor w = weight_in.contiguous();
  const int64_t n = idx.size(0), c = f.size(1);
  at::Tensor out = at::empty({n, c}, f.options());
  const float* fp = f.data_ptr<float>();
  const int64_t* ip = idx.data_ptr<int64_t>();
  const float* wp = w.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, n, 64, [&](int64_t n0, int64_t n1) {
    for (int64_t i = n0; i < n1; ++i) {
      const float* f0 = fp + ip[i * 3] * c;
      const float* f1 = fp + ip[i * 3 + 1] * c;
      const float* f2 = fp + ip[i * 3 + 2] * c;
      const float w0 = wp[i * 3], w1 = wp[i * 3 + 1], w2 = wp[i * 3 + 2];
      for (int64_t ch = 0; ch < c; ++ch) {
        const float a = w0 * f0[ch], b = w1 * f1[ch], d = w2 * f2[ch];
        op[i * c + ch] = (a + b) + d;
      }
    }
  });
  return out;
}

at::Tensor three_interpolate_backward_cpu(const at::Tensor& grad_in, const at::Tensor& idx_in,
                                          const at::Tensor& weight_in, int64_t num_rows) {
  check_index(idx_in, num_rows, grad_in, "three_interpolate_backward", 3);
  PD_CHECK_TYPE(grad_in.scalar_type() == at::kFloat && weight_in.scalar_type() == at::kFloat,
                "three_interpolate_backward: grad and weight must be float32");
  PD_CHECK_VALUE(grad_in.dim() == 2 && grad_in.size(0) == idx_in.size(0) &&
                     weight_in.sizes() == idx_in.sizes(),
                 "three_interpolate_backward: grad must be [N, C] and weight [N, 3] with N = ",
                 idx_in.size(0));
  const at::Tensor g = grad_in.contiguous(), idx = idx_in.contiguous(), w = weight_in.contiguous();
  const int64_t n = idx.size(0), c = g.size(1);
  at::Tensor out = at::zeros({num_rows, c}, g.options());
  const float* gp = g.data_ptr<float>();
  const int64_t* ip = idx.data_ptr<int64_t>();
  const float* wp = w.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, c, 8, [&](int64_t c0, int64_t c1) {
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < 3; ++j) {
        float* row = op + ip[i * 3 + j] * c;
        const float wj = wp[i * 3 + j];
        for (int64_t ch = c0; ch < c1; ++ch) row[ch] += wj * gp[i * c + ch];
      }
    }
  });
  return out;
}

// ---------------------------------------------------------------------------------------------
// points in boxes, RoI point pooling
// ---------------------------------------------------------------------------------------------
struct BoxTrig {
  double c, s;
};

std::vector<BoxTrig> box_trig(const float* boxes, int64_t r) {
  std::vector<BoxTrig> t(r);
  for (int64_t i = 0; i < r; ++i) {
    t[i] = {std::cos(static_cast<double>(boxes[i * 7 + 6])),
            std::sin(static_cast<double>(boxes[i * 7 + 6]))};
  }
  return t;
}

at::Tensor points_in_boxes_cpu(const at::Tensor& points_in, const at::Tensor& offsets,
                               const at::Tensor& boxes_in, const at::Tensor& box_offsets) {
  constexpr const char* op = "points_in_boxes";
  check_points(points_in, op);
  check_boxes(boxes_in, points_in, op);
  check_offsets(offsets, points_in.size(0), points_in, op, "offsets");
  check_offsets(box_offsets, boxes_in.size(0), points_in, op, "box_offsets");
  PD_CHECK_VALUE(offsets.numel() == box_offsets.numel(), op,
                 ": offsets and box_offsets must have the same length");
  const at::Tensor points = points_in.contiguous(), boxes = boxes_in.contiguous();
  const std::vector<int64_t> off = host_offsets(offsets), boff = host_offsets(box_offsets);
  at::Tensor out = at::full({points.size(0)}, -1, points.options().dtype(at::kLong));
  const float* pp = points.data_ptr<float>();
  const float* bp = boxes.data_ptr<float>();
  const std::vector<BoxTrig> trig = box_trig(bp, boxes.size(0));
  int64_t* o = out.data_ptr<int64_t>();
  for (size_t b = 0; b + 1 < off.size(); ++b) {
    if (boff[b + 1] == boff[b]) continue;
    at::parallel_for(off[b], off[b + 1], 256, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        for (int64_t k = boff[b]; k < boff[b + 1]; ++k) {
          if (in_box(pp + i * 3, bp + k * 7, trig[k].c, trig[k].s)) {
            o[i] = k;
            break;
          }
        }
      }
    });
  }
  return out;
}

std::tuple<at::Tensor, at::Tensor> roipoint_pool3d_cpu(const at::Tensor& points_in,
                                                       const at::Tensor& features_in,
                                                       const at::Tensor& offsets,
                                                       const at::Tensor& boxes_in,
                                                       const at::Tensor& box_offsets,
                                                       int64_t num_sampled) {
  check_roipool_args(points_in, features_in, offsets, boxes_in, box_offsets, num_sampled);
  const at::Tensor points = points_in.contiguous(), feats = features_in.contiguous(),
                   boxes = boxes_in.contiguous();
  const std::vector<int64_t> off = host_offsets(offsets), boff = host_offsets(box_offsets);
  const int64_t r = boxes.size(0), c = feats.size(1), width = 3 + c;
  at::Tensor pooled = at::zeros({r, num_sampled, width}, points.options());
  at::Tensor empty = at::ones({r}, points.options().dtype(at::kBool));
  const float* pp = points.data_ptr<float>();
  const float* fp = feats.data_ptr<float>();
  const float* bp = boxes.data_ptr<float>();
  const std::vector<BoxTrig> trig = box_trig(bp, r);
  float* out = pooled.data_ptr<float>();
  bool* emp = empty.data_ptr<bool>();
  for (size_t b = 0; b + 1 < off.size(); ++b) {
    at::parallel_for(boff[b], boff[b + 1], 4, [&](int64_t k0, int64_t k1) {
      std::vector<int64_t> inside;
      for (int64_t k = k0; k < k1; ++k) {
        inside.clear();
        for (int64_t i = off[b];
             i < off[b + 1] && static_cast<int64_t>(inside.size()) < num_sampled;
             ++i) {
          if (in_box(pp + i * 3, bp + k * 7, trig[k].c, trig[k].s)) inside.push_back(i);
        }
        if (inside.empty()) continue;
        emp[k] = false;
        const int64_t n = static_cast<int64_t>(inside.size());
        for (int64_t s = 0; s < num_sampled; ++s) {
          const int64_t row = inside[s % n];
          float* dst = out + (k * num_sampled + s) * width;
          std::copy(pp + row * 3, pp + row * 3 + 3, dst);
          std::copy(fp + row * c, fp + row * c + c, dst + 3);
        }
      }
    });
  }
  return {pooled, empty};
}

}  // namespace
}  // namespace pointnet2
}  // namespace pointdistiller

TORCH_LIBRARY_IMPL(pointdistiller, CPU, m) {
  using namespace pointdistiller::pointnet2;
  m.impl("furthest_point_sample", &furthest_point_sample_cpu);
  m.impl("ball_query", &ball_query_cpu);
  m.impl("group_points", &group_points_cpu);
  m.impl("group_points_backward", &group_points_backward_cpu);
  m.impl("three_interpolate", &three_interpolate_cpu);
  m.impl("three_interpolate_backward", &three_interpolate_backward_cpu);
  m.impl("points_in_boxes", &points_in_boxes_cpu);
  m.impl("roipoint_pool3d", &roipoint_pool3d_cpu);
}
