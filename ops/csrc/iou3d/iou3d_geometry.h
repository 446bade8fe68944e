// Exact rotated-rectangle overlap in float64, shared by the CPU and CUDA kernels of iou3d.
//
// Algorithm: both BEV rectangles are expressed in a frame centred on box a (so the result does
// not depend on where the pair sits in the scene and identical boxes yield bit-identical
// corners); box a is clipped by the four counter-clockwise edge half-planes of box b
// (Sutherland-Hodgman: a vertex with zero signed distance counts as inside, intersection points
// are made only on strict sign changes), and the shoelace area of the clipped polygon is the
// overlap. Zero-size boxes, and pairs whose circumscribed circles or axis-aligned bounding
// rectangles are disjoint, are 0 without clipping. Areas are clamped to [0, min(area_a, area_b)]
// and IoUs to [0, 1]; nothing here produces NaN for finite input. The per-box part (sin/cos,
// extents) is computed once per box by make_bev_geom.
#pragma once

#include <cmath>

#if defined(__CUDACC__)
#define PD_IOU3D_HD __host__ __device__ __forceinline__
#else
#define PD_IOU3D_HD inline
#endif

namespace pointdistiller {
namespace iou3d {

// A quad clipped by 4 half-planes has at most 8 vertices; rounding noise on near-collinear
// vertices can add a few, so the buffers have room for 16 and never write past it.
constexpr int kMaxPolygon = 16;
// Box layout: (x, y, z_centre, l, w, h, yaw).
constexpr int kBoxDim = 7;

struct Point2 {
  double x, y;
};

PD_IOU3D_HD double cross_at(const Point2& p, const Point2& q, const Point2& r) {
  // z of (q - p) x (r - p): > 0 when r lies left of the directed edge p -> q.
  return (q.x - p.x) * (r.y - p.y) - (q.y - p.y) * (r.x - p.x);
}

// What the overlap test needs of one BEV rectangle, computed once per box (one sin/cos).
struct BevGeom {
  double x, y;     // centre (m)
  double c, s;     // cos(yaw), sin(yaw)
  double hl, hw;   // half length, half width (m)
  double ex, ey;   // half extents of the axis-aligned bounding rectangle (m)
  double r;        // circumradius (m)
  double area;     // l * w (m^2)
};

PD_IOU3D_HD BevGeom make_bev_geom(const float* box) {
  BevGeom g;
  g.x = static_cast<double>(box[0]);
  g.y = static_cast<double>(box[1]);
  g.c = cos(static_cast<double>(box[6]));
  g.s = sin(static_cast<double>(box[6]));
  g.hl = 0.5 * static_cast<double>(box[3]);
  g.hw = 0.5 * static_cast<double>(box[4]);
  g.ex = fabs(g.c) * g.hl + fabs(g.s) * g.hw;
  g.ey = fabs(g.s) * g.hl + fabs(g.c) * g.hw;
  g.r = sqrt(g.hl * g.hl + g.hw * g.hw);
  g.area = static_cast<double>(box[3]) * static_cast<double>(box[4]);
  return g;
}

// Corners (counter-clockwise) of rectangle g, relative to (origin_x, origin_y).
PD_IOU3D_HD void bev_corners(const BevGeom& g, double origin_x, double origin_y, Point2* out) {
  const double cx = g.x - origin_x;
  const double cy = g.y - origin_y;
  const double lx[4] = {g.hl, -g.hl, -g.hl, g.hl};
  const double ly[4] = {g.hw, g.hw, -g.hw, -g.hw};
  for (int k = 0; k < 4; ++k) {
    out[k].x = cx + g.c * lx[k] - g.s * ly[k];
    out[k].y = cy + g.s * lx[k] + g.c * ly[k];
  }
}

// Keeps the part of polygon `in` (n vertices) left of or on the directed line p -> q.
PD_IOU3D_HD int clip_half_plane(const Point2* in, int n, const Point2& p, const Point2& q,
                                Point2* out) {
  int m = 0;
  if (n == 0) return 0;
  Point2 prev = in[n - 1];
  double d_prev = cross_at(p, q, prev);
  for (int i = 0; i < n; ++i) {
    const Point2 cur = in[i];
    const double d_cur = cross_at(p, q, cur);
    if (((d_prev < 0.0 && d_cur > 0.0) || (d_prev > 0.0 && d_cur < 0.0)) && m < kMaxPolygon) {
      const double t = d_prev / (d_prev - d_cur);
      out[m].x = prev.x + t * (cur.x - prev.x);
      out[m].y = prev.y + t * (cur.y - prev.y);
      ++m;
    }
    if (d_cur >= 0.0 && m < kMaxPolygon) out[m++] = cur;
    prev = cur;
    d_prev = d_cur;
  }
  return m;
}

PD_IOU3D_HD double polygon_area(const Point2* poly, int n) {
  double twice = 0.0;
  for (int i = 0; i < n; ++i) {
    const Point2& a = poly[i];
    const Point2& b = poly[(i + 1) % n];
    twice += a.x * b.y - a.y * b.x;
  }
  return 0.5 * twice;
}

// True when the rectangles provably do not overlap: their circumscribed circles or their
// axis-aligned bounding rectangles are disjoint.
PD_IOU3D_HD bool surely_disjoint(const BevGeom& a, const BevGeom& b) {
  const double dx = a.x - b.x;
  const double dy = a.y - b.y;
  const double r = a.r + b.r;
  return dx * dx + dy * dy > r * r || fabs(dx) > a.ex + b.ex || fabs(dy) > a.ey + b.ey;
}

// Intersection area (m^2) of the BEV rectangles a and b.
PD_IOU3D_HD double overlap_bev(const BevGeom& a, const BevGeom& b) {
  if (!(a.area > 0.0) || !(b.area > 0.0) || surely_disjoint(a, b)) return 0.0;
  Point2 cb[4];
  Point2 buf0[kMaxPolygon], buf1[kMaxPolygon];
  bev_corners(a, a.x, a.y, buf0);
  bev_corners(b, a.x, a.y, cb);
  int n = 4;
  Point2* src = buf0;
  Point2* dst = buf1;
  for (int e = 0; e < 4 && n > 0; ++e) {
    n = clip_half_plane(src, n, cb[e], cb[(e + 1) % 4], dst);
    Point2* tmp = src;
    src = dst;
    dst = tmp;
  }
  if (n < 3) return 0.0;
  double area = polygon_area(src, n);
  const double cap = a.area < b.area ? a.area : b.area;
  if (!(area > 0.0)) area = 0.0;
  return area < cap ? area : cap;
}

// The three pairwise quantities with one signature, for the kernels' templates.
struct OverlapBevFn {
  PD_IOU3D_HD double operator()(const float*, const BevGeom& ga, const float*,
                                const BevGeom& gb) const {
    return overlap_bev(ga, gb);
  }
};

PD_IOU3D_HD double clamp_unit(double v) { return v < 0.0 ? 0.0 : (v > 1.0 ? 1.0 : v); }

// Rotated BEV IoU of rectangles a and b, in [0, 1].
PD_IOU3D_HD double iou_bev(const BevGeom& a, const BevGeom& b) {
  const double inter = overlap_bev(a, b);
  if (!(inter > 0.0)) return 0.0;
  const double uni = a.area + b.area - inter;
  return uni > 0.0 ? clamp_unit(inter / uni) : 0.0;
}

// Overlap of the vertical extents [z - h/2, z + h/2] of boxes a and b (m).
PD_IOU3D_HD double overlap_z(const float* a, const float* b) {
  const double a_lo = static_cast<double>(a[2]) - 0.5 * a[5];
  const double a_hi = static_cast<double>(a[2]) + 0.5 * a[5];
  const double b_lo = static_cast<double>(b[2]) - 0.5 * b[5];
  const double b_hi = static_cast<double>(b[2]) + 0.5 * b[5];
  const double lo = a_lo > b_lo ? a_lo : b_lo;
  const double hi = a_hi < b_hi ? a_hi : b_hi;
  return hi > lo ? hi - lo : 0.0;
}

// 3D IoU of boxes a and b (BEV overlap x z-overlap / union volume), in [0, 1]; ga and gb are
// make_bev_geom(a) and make_bev_geom(b).
PD_IOU3D_HD double iou_3d(const float* a, const BevGeom& ga, const float* b,
                          const BevGeom& gb) {
  const double dz = overlap_z(a, b);
  if (!(dz > 0.0)) return 0.0;
  const double inter = overlap_bev(ga, gb) * dz;
  if (!(inter > 0.0)) return 0.0;
  const double vol_a = ga.area * static_cast<double>(a[5]);
  const double vol_b = gb.area * static_cast<double>(b[5]);
  const double uni = vol_a + vol_b - inter;
  return uni > 0.0 ? clamp_unit(inter / uni) : 0.0;
}

struct IouBevFn {
  PD_IOU3D_HD double operator()(const float*, const BevGeom& ga, const float*,
                                const BevGeom& gb) const {
    return iou_bev(ga, gb);
  }
};

struct Iou3dFn {
  PD_IOU3D_HD double operator()(const float* a, const BevGeom& ga, const float* b,
                                const BevGeom& gb) const {
    return iou_3d(a, ga, b, gb);
  }
};

}  // namespace iou3d
}  // namespace pointdistiller
