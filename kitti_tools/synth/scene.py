"""Random street scenes in the LiDAR frame: a road along x with lanes, parking strips, curbs and
raised sidewalks on gently sloping terrain; buildings, walls, poles, trees and bushes along the
sides; parked and moving vehicles, pedestrians and cyclists as compound shapes inside their
KITTI-sized label boxes.

Every object's shapes lie at least ``SHAPE_MARGIN`` inside its label box (except at the bottom), so
LiDAR returns with a few centimetres of range noise still fall inside the box.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from pointdistiller.kitti_tools.calib import Calib
from pointdistiller.kitti_tools.geometry import boxes_to_image, lidar_box_corners
from pointdistiller.kitti_tools.synth import raycast as rc

SHAPE_MARGIN = 0.05

# KITTI-like size statistics: (mean, std) of length, width, height, metres, and clip limits.
SIZE_STATS: Dict[str, Tuple[Tuple[float, float], Tuple[float, float], Tuple[float, float]]] = {
    "Car": ((3.9, 0.4), (1.6, 0.1), (1.56, 0.1)),
    "Van": ((5.0, 0.45), (1.95, 0.1), (2.2, 0.15)),
    "Truck": ((10.0, 2.0), (2.6, 0.12), (3.4, 0.3)),
    "Tram": ((16.0, 2.0), (2.55, 0.08), (3.5, 0.15)),
    "Misc": ((2.8, 1.0), (1.5, 0.3), (1.8, 0.4)),
    "Pedestrian": ((0.8, 0.15), (0.6, 0.08), (1.73, 0.1)),
    "Person_sitting": ((0.85, 0.15), (0.6, 0.08), (1.27, 0.08)),
    "Cyclist": ((1.76, 0.12), (0.6, 0.08), (1.73, 0.08)),
}
_MIN_SIZE = {"Truck": (6.0, 2.2, 2.6), "Tram": (12.0, 2.3, 3.1), "Misc": (1.0, 0.8, 0.8),
             "Pedestrian": (0.5, 0.45, 1.4), "Person_sitting": (0.55, 0.45, 1.05),
             "Cyclist": (1.45, 0.45, 1.5), "Car": (3.0, 1.4, 1.3), "Van": (4.2, 1.75, 1.85)}


@dataclass
class SceneObject:
    """One object: its class, its LiDAR label box ``[7]`` float64 and its ``[k, PRIM_FIELDS]``
    shape primitives (owner column filled in by :meth:`Scene.primitives`)."""

    name: str
    box: np.ndarray
    prims: np.ndarray


@dataclass
class Scene:
    """A static snapshot of a street.

    Attributes:
        ground: ``[GROUND_FIELDS]`` terrain parameters (see :mod:`.raycast`).
        background: ``[M, PRIM_FIELDS]`` buildings, walls, poles and vegetation (owner -1).
        objects: the objects, labelled or not.
        lane_lines: ``[L, 2]`` (y of a painted line, 1 for dashed / 0 for solid).
    """

    ground: np.ndarray
    background: np.ndarray
    objects: List[SceneObject] = field(default_factory=list)
    lane_lines: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))

    def primitives(self) -> np.ndarray:
        """``[M + K, PRIM_FIELDS]``: background rows, then each object's rows with owner = index."""
        rows = [self.background.reshape(-1, rc.PRIM_FIELDS)]
        for i, obj in enumerate(self.objects):
            p = obj.prims.copy()
            p[:, rc.F_OWNER] = i
            rows.append(p)
        return np.ascontiguousarray(np.concatenate(rows, axis=0))

    def boxes(self) -> np.ndarray:
        """``[n, 7]`` float64 LiDAR boxes of all objects."""
        if not self.objects:
            return np.zeros((0, 7))
        return np.stack([o.box for o in self.objects]).astype(np.float64)

    def names(self) -> np.ndarray:
        return np.array([o.name for o in self.objects], dtype=object)

    def ground_height(self, x: float, y: float) -> float:
        """Terrain height (road or sidewalk) at LiDAR ``(x, y)``, metres."""
        g = self.ground.tolist()
        z = g[rc.G_Z0] + g[rc.G_SX] * x + g[rc.G_QX] * x * x + g[rc.G_SY] * y
        return float(z + (g[rc.G_CURB] if abs(y - g[rc.G_ROAD_Y]) > g[rc.G_ROAD_HALF] else 0.0))


# ---------------------------------------------------------------------------------------------
# primitive constructors
# ---------------------------------------------------------------------------------------------
def prim(kind, x, y, z, a, b, c, yaw=0.0, refl=0.3, density=1.0, depth=0.0) -> np.ndarray:
    """One primitive row (owner -1); see :mod:`.raycast` for the meaning of a, b, c."""
    return np.array([kind, x, y, z, a, b, c, np.cos(yaw), np.sin(yaw), refl, -1.0, density, depth],
                    dtype=np.float64)


def make_object(name: str, box, parts: List[tuple], refl: float) -> SceneObject:
    """An object from parts given in its box frame (x along the heading, z up from the box bottom).

    Parts: ``("box", x0, x1, y0, y1, z0, z1[, refl])`` or ``("cyl", x, y, z0, z1, r[, refl])``.
    """
    box = np.asarray(box, np.float64)
    cx, cy, cz, _, _, h, yaw = box
    c, s = np.cos(yaw), np.sin(yaw)
    bottom = cz - h / 2
    rows = []
    for part in parts:
        if part[0] == "box":
            x0, x1, y0, y1, z0, z1 = part[1:7]
            r = part[7] if len(part) > 7 else refl
            lx, ly = (x0 + x1) / 2, (y0 + y1) / 2
            rows.append(prim(rc.BOX, cx + c * lx - s * ly, cy + s * lx + c * ly, bottom + (z0 + z1) / 2,
                             (x1 - x0) / 2, (y1 - y0) / 2, (z1 - z0) / 2, yaw, r))
        else:
            lx, ly, z0, z1, rad = part[1:6]
            r = part[6] if len(part) > 6 else refl
            rows.append(prim(rc.CYLINDER, cx + c * lx - s * ly, cy + s * lx + c * ly,
                             bottom + (z0 + z1) / 2, rad, rad, (z1 - z0) / 2, 0.0, r))
    return SceneObject(name, box, np.stack(rows))


def object_parts(name: str, l: float, w: float, h: float, rng: np.random.Generator) -> List[tuple]:
    """The compound shape of a class inside an ``l x w x h`` box (box frame, see make_object)."""
    m = SHAPE_MARGIN
    hl, hw = l / 2 - m, w / 2 - m
    if name in ("Car", "Van"):
        split = (0.55 if name == "Car" else 0.5) * h
        cabin = (0.52 if name == "Car" else 0.82) * l
        back = -hl + (0.12 if name == "Car" else 0.04) * l
        axle = 0.32 * l if name == "Car" else 0.34 * l
        wheel = (("box", axle - 0.32, axle + 0.32, -hw, hw, 0.0, 0.32, 0.05),
                 ("box", -axle - 0.32, -axle + 0.32, -hw, hw, 0.0, 0.32, 0.05))
        return [("box", -hl, hl, -hw, hw, 0.28, split),
                ("box", back, back + cabin, -hw + 0.08, hw - 0.08, split, h - m, 0.08), *wheel]
    if name == "Truck":
        cab = 0.2 * l
        return [("box", hl - cab, hl, -hw, hw, 0.45, 0.88 * h),
                ("box", -hl, hl - cab - 0.3, -hw, hw, 0.9, h - m),
                ("box", -hl, hl, -hw + 0.3, hw - 0.3, 0.4, 0.9, 0.1),
                ("box", hl - 0.6 * cab - 0.4, hl - 0.6 * cab + 0.4, -hw, hw, 0.0, 0.5, 0.05),
                ("box", -hl + 0.5, -hl + 2.2, -hw, hw, 0.0, 0.5, 0.05)]
    if name == "Tram":
        return [("box", -hl, hl, -hw, hw, 0.35, h - 0.25),
                ("box", -hl + 1.0, hl - 1.0, -hw + 0.4, hw - 0.4, h - 0.25, h - m, 0.5)]
    if name == "Misc":
        return [("box", -hl, hl, -hw, hw, 0.1 * rng.random(), h - m)]
    if name == "Pedestrian":
        torso = min(0.21, hw, hl)
        stride = min(0.25, hl - 0.07) * rng.uniform(-1, 1)
        leg_y = min(0.1, hw - 0.07)
        return [("cyl", stride, leg_y, 0.0, 0.48 * h, 0.07), ("cyl", -stride, -leg_y, 0.0, 0.48 * h, 0.07),
                ("cyl", 0.0, 0.0, 0.46 * h, 0.84 * h, torso), ("cyl", 0.0, 0.0, 0.84 * h, h - m, 0.1)]
    if name == "Person_sitting":
        torso = min(0.2, hw, hl)
        return [("box", -hl, hl, -hw, hw, 0.0, 0.45 * h, 0.2),
                ("cyl", -0.3 * hl, 0.0, 0.45 * h, 0.82 * h, torso),
                ("cyl", -0.3 * hl, 0.0, 0.82 * h, h - m, 0.1)]
    if name == "Cyclist":
        wheel = min(0.34, hl / 2)
        return [("box", hl - 2 * wheel, hl, -0.03, 0.03, 0.0, 2 * wheel, 0.3),
                ("box", -hl, -hl + 2 * wheel, -0.03, 0.03, 0.0, 2 * wheel, 0.3),
                ("box", -hl + wheel, hl - wheel, -0.04, 0.04, 0.45, 0.9, 0.5),
                ("box", -0.25, 0.15, -min(0.17, hw), min(0.17, hw), 0.5, 0.55 * h),
                ("cyl", -0.1, 0.0, 0.55 * h, 0.86 * h, min(0.19, hw)),
                ("cyl", 0.0, 0.0, 0.86 * h, h - m, 0.1)]
    raise ValueError(f"object_parts: unknown class {name!r}")


def sample_size(name: str, rng: np.random.Generator) -> Tuple[float, float, float]:
    """(l, w, h) from the class's normal size distribution, clipped to 2.5 sigma and a minimum."""
    out = []
    for (mean, std), low in zip(SIZE_STATS[name], _MIN_SIZE[name]):
        out.append(max(low, mean + std * min(2.5, max(-2.5, float(rng.standard_normal())))))
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# BEV collision check
# ---------------------------------------------------------------------------------------------
def _rect_corners(boxes: np.ndarray) -> np.ndarray:
    return lidar_box_corners(boxes)[:, :4, :2]


def overlaps_any(box: np.ndarray, others: np.ndarray, margin: float) -> bool:
    """Whether the BEV rectangle of ``box`` grown by ``margin`` on every side overlaps any of
    ``others`` ``[n, 7]`` (separating-axis test on the four edge normals)."""
    if len(others) == 0:
        return False
    grown = np.array(box, np.float64)
    grown[3:5] += 2 * margin
    # bounding-circle prefilter: only nearby rectangles need the exact test
    reach = np.hypot(grown[3], grown[4]) / 2 + np.hypot(others[:, 3], others[:, 4]) / 2
    others = others[np.hypot(others[:, 0] - grown[0], others[:, 1] - grown[1]) < reach]
    if len(others) == 0:
        return False
    a = _rect_corners(grown[None])[0]                      # [4, 2]
    b = _rect_corners(others)                              # [n, 4, 2]
    angles = np.concatenate([np.broadcast_to(grown[6], (len(others), 1)), others[:, 6:7]], axis=1)
    angles = np.concatenate([angles, angles + np.pi / 2], axis=1)   # [n, 4]
    axes = np.stack([np.cos(angles), np.sin(angles)], axis=-1)      # [n, 4, 2]
    pa = np.einsum("pd,nkd->nkp", a, axes)
    pb = np.einsum("npd,nkd->nkp", b, axes)
    separated = (pa.max(-1) <= pb.min(-1)) | (pb.max(-1) <= pa.min(-1))
    return bool((~separated.any(-1)).any())


# ---------------------------------------------------------------------------------------------
# scene generation
# ---------------------------------------------------------------------------------------------
@dataclass
class _Layout:
    lane_w: float
    lanes: int          # per direction
    mid: float          # y of the centre line
    y_lo: float         # right edge of the paved road
    y_hi: float         # left edge
    curb: float
    walk_lo: float      # outer edge of the right sidewalk (y)
    walk_hi: float
    park_lo: bool
    park_hi: bool


def _layout(rng: np.random.Generator) -> _Layout:
    lanes = int(rng.integers(1, 3))
    lane_w = float(rng.uniform(3.2, 3.7))
    ego_lane = int(rng.integers(0, lanes))
    mid = (ego_lane + 0.5) * lane_w
    park_lo, park_hi = bool(rng.random() < 0.75), bool(rng.random() < 0.6)
    y_lo = mid - lanes * lane_w - (2.3 if park_lo else 0.4)
    y_hi = mid + lanes * lane_w + (2.3 if park_hi else 0.4)
    walk_lo = y_lo - rng.uniform(2.0, 4.0)
    walk_hi = y_hi + rng.uniform(2.0, 4.0)
    return _Layout(lane_w, lanes, mid, y_lo, y_hi, float(rng.uniform(0.1, 0.18)), walk_lo, walk_hi,
                   park_lo, park_hi)


def _ground(lay: _Layout, rng: np.random.Generator, mount_height: float) -> np.ndarray:
    g = np.zeros(rc.GROUND_FIELDS)
    g[rc.G_Z0] = -mount_height
    g[rc.G_SX] = np.clip(rng.normal(0.0, 0.01), -0.025, 0.025)
    g[rc.G_QX] = np.clip(rng.normal(0.0, 1e-4), -2.5e-4, 2.5e-4)
    g[rc.G_SY] = np.clip(rng.normal(0.0, 0.005), -0.012, 0.012)
    g[rc.G_ROAD_Y] = (lay.y_lo + lay.y_hi) / 2
    g[rc.G_ROAD_HALF] = (lay.y_hi - lay.y_lo) / 2
    g[rc.G_CURB] = lay.curb
    return g


_X_MIN, _X_MAX = -110.0, 130.0   # the stretch of street that gets background (metres along x)


def _background(lay: _Layout, scene: Scene, rng: np.random.Generator):
    """Buildings, walls, poles, trees and bushes; returns (rows, obstacle boxes, side-street x)."""
    rows, obstacles, streets = [], [], []
    for side in (-1, 1):
        _frontage(lay, scene, rng, side, rows, streets)
        _poles(lay, scene, rng, side, rows, obstacles)
        if rng.random() < 0.75:
            _trees(lay, scene, rng, side, rows, obstacles)
    rows = np.stack(rows)
    return rows, np.concatenate([np.asarray(obstacles, np.float64).reshape(-1, 7),
                                 _low_obstacles(scene, rows)]), streets


def _frontage(lay: _Layout, scene: Scene, rng: np.random.Generator, side: int, rows: list,
              streets: list) -> None:
    """Buildings (with shrubs in front of setbacks) or, on an open side, walls and hedges; gaps
    for side streets, whose centre x go to ``streets``."""
    walk = lay.walk_lo if side < 0 else lay.walk_hi
    open_side = rng.random() < 0.15
    x = _X_MIN + rng.uniform(0, 10)
    while x < _X_MAX:
        if rng.random() < 0.12:  # side street
            width = rng.uniform(10, 18)
            streets.append(x + width / 2)
            x += width
            continue
        length = rng.uniform(8, 35)
        setback = rng.uniform(0, 3.5) if rng.random() < 0.6 else 0.0
        depth = rng.uniform(8, 16)
        y_front = walk + side * setback
        base = float(scene.ground_height(x + length / 2, y_front))
        if open_side:
            if rng.random() < 0.5:  # wall or fence
                hgt = rng.uniform(0.8, 2.0)
                rows.append(prim(rc.BOX, x + length / 2, y_front + side * 0.1, base + hgt / 2,
                                 length / 2, 0.1, hgt / 2, 0.0, rng.uniform(0.2, 0.7)))
            for _ in range(int(rng.integers(0, 4))):  # hedges
                r = rng.uniform(0.6, 1.5)
                rows.append(prim(rc.ELLIPSOID, x + rng.uniform(0, length), y_front + side * r,
                                 base + 0.6 * r, r * rng.uniform(1, 2), r, r * 0.8, 0.0,
                                 rng.uniform(0.25, 0.55), density=0.9, depth=0.5))
        else:
            hgt = rng.uniform(4, 18)
            rows.append(prim(rc.BOX, x + length / 2, y_front + side * depth / 2,
                             base + hgt / 2 - 0.5, length / 2, depth / 2, hgt / 2 + 0.5,
                             rng.normal(0, 0.01), rng.uniform(0.15, 0.75)))
            if setback > 1.5 and rng.random() < 0.7:
                r = rng.uniform(0.5, 1.0)
                rows.append(prim(rc.ELLIPSOID, x + length / 2, y_front - side * r * 0.9,
                                 base + 0.5 * r, length / 2 * 0.8, r, r * 0.9, 0.0,
                                 rng.uniform(0.25, 0.55), density=0.9, depth=0.4))
        x += length + (rng.uniform(0.5, 4) if rng.random() < 0.4 else 0.0)


def _poles(lay: _Layout, scene: Scene, rng: np.random.Generator, side: int, rows: list,
           obstacles: list) -> None:
    """Street lights and signs near the curb."""
    edge = lay.y_lo if side < 0 else lay.y_hi
    x = _X_MIN + rng.uniform(0, 20)
    while x < _X_MAX:
        y = edge + side * rng.uniform(0.4, 0.9)
        r, hgt = rng.uniform(0.07, 0.15), rng.uniform(3.5, 9.0)
        base = float(scene.ground_height(x, y))
        rows.append(prim(rc.CYLINDER, x, y, base + hgt / 2, r, r, hgt / 2, 0.0,
                         rng.uniform(0.3, 0.7)))
        if rng.random() < 0.35:
            rows.append(prim(rc.BOX, x, y, base + min(hgt, 3.0) - 0.4, 0.04, 0.35, 0.35, 0.0,
                             rng.uniform(0.7, 0.95)))
        obstacles.append([x, y, 0.0, 2 * r, 2 * r, 1.0, 0.0])
        x += rng.uniform(15, 40)


def _trees(lay: _Layout, scene: Scene, rng: np.random.Generator, side: int, rows: list,
           obstacles: list) -> None:
    """A row of trees along the sidewalk (trunk + crown that clears pedestrians)."""
    edge = lay.y_lo if side < 0 else lay.y_hi
    x = _X_MIN + rng.uniform(0, 15)
    while x < _X_MAX:
        y = edge + side * rng.uniform(1.0, 1.6)
        tr, th = rng.uniform(0.12, 0.25), rng.uniform(2.0, 3.2)
        cr, ch = rng.uniform(1.4, 3.0), rng.uniform(1.2, 2.5)
        base = float(scene.ground_height(x, y))
        rows.append(prim(rc.CYLINDER, x, y, base + th / 2, tr, tr, th / 2, 0.0,
                         rng.uniform(0.2, 0.4)))
        crown_z = base + max(th + 0.7 * ch, 2.3 + ch)
        rows.append(prim(rc.ELLIPSOID, x, y, crown_z, cr, cr * rng.uniform(0.8, 1.1),
                         ch, rng.uniform(0, np.pi), rng.uniform(0.25, 0.55),
                         density=rng.uniform(0.55, 0.85), depth=0.8))
        obstacles.append([x, y, 0.0, 2 * tr, 2 * tr, 1.0, 0.0])
        x += rng.uniform(6, 16)


def _low_obstacles(scene: Scene, rows: np.ndarray) -> np.ndarray:
    """BEV boxes of everything within 2 m of the ground (poles and trunks are already listed): no
    object is placed there."""
    base = np.array([scene.ground_height(x, y) for x, y in rows[:, rc.F_X:rc.F_Y + 1].tolist()])
    low = rows[:, rc.F_Z] - rows[:, rc.F_C] - base < 2.0
    low &= rows[:, rc.F_KIND] != rc.CYLINDER
    yaw = np.arctan2(rows[low, rc.F_SIN], rows[low, rc.F_COS])
    return np.stack([rows[low, rc.F_X], rows[low, rc.F_Y], rows[low, rc.F_Z],
                     2 * rows[low, rc.F_A], 2 * rows[low, rc.F_B], 2 * rows[low, rc.F_C], yaw], 1)


_EGO = np.array([[-0.8, 0.0, 0.0, 4.6, 1.9, 1.6, 0.0]])  # the recording car, LiDAR on its roof


def _in_view(box: np.ndarray, calib: Calib, image_shape, max_distance: float) -> bool:
    if np.hypot(box[0], box[1]) > max_distance or box[0] < -2.0:
        return False
    b2d, _ = boxes_to_image(box[None], calib, image_shape)
    return bool(b2d[0, 2] > b2d[0, 0] and b2d[0, 3] > b2d[0, 1])


def generate_scene(rng: np.random.Generator, calib: Calib, image_shape: Tuple[int, int],
                   mount_height: float = 1.73, max_in_view: Optional[int] = None,
                   view_distance: float = 80.0) -> Scene:
    """Draws a random street scene.

    Args:
        rng: the frame's generator (the only source of randomness).
        calib, image_shape: camera 2, to cap the number of objects in the camera view.
        mount_height: LiDAR height above the road at the origin, metres.
        max_in_view: at most this many objects whose box projects into the image within
            ``view_distance`` (default: drawn from 9..20 per frame); objects out of view are not
            capped.
    """
    lay = _layout(rng)
    scene = Scene(ground=_ground(lay, rng, mount_height), background=np.zeros((0, rc.PRIM_FIELDS)))
    scene.background, obstacles, streets = _background(lay, scene, rng)
    lines = [[lay.mid, 1.0 if lay.lanes == 1 and rng.random() < 0.6 else 0.0]]
    for k in range(1, lay.lanes):
        lines += [[lay.mid + k * lay.lane_w, 1.0], [lay.mid - k * lay.lane_w, 1.0]]
    lines += [[lay.mid - lay.lanes * lay.lane_w, 0.0], [lay.mid + lay.lanes * lay.lane_w, 0.0]]
    scene.lane_lines = np.asarray(lines, np.float64)
    if max_in_view is None:
        max_in_view = int(rng.integers(9, 21))

    cands = (_parked(lay, rng) + _traffic(lay, rng) + _crossing(streets, lay, rng)
             + _walkers(lay, rng) + _riders_and_misc(lay, rng))
    _place(scene, cands, obstacles, rng, calib, image_shape, view_distance, max_in_view)
    return scene


# Candidate objects, each (class, x, y, yaw, on_sidewalk); drawn in a fixed order from the frame's
# generator, so a frame is the same for a given seed.
def _parked(lay: _Layout, rng: np.random.Generator) -> list:
    """Rows of parked cars, vans and trucks along the kerbs that have parking."""
    cands = []
    for side, has in ((-1, lay.park_lo), (1, lay.park_hi)):
        if not has:
            continue
        y_row = (lay.y_lo + 1.15) if side < 0 else (lay.y_hi - 1.15)
        x = -45 + rng.uniform(0, 5)
        heading = 0.0 if side < 0 else np.pi
        while x < 85:
            name = str(rng.choice(["Car", "Van", "Truck"], p=[0.86, 0.11, 0.03]))
            if rng.random() < 0.65:
                yaw = heading + (np.pi if rng.random() < 0.1 else 0.0) + rng.normal(0, 0.04)
                cands.append((name, x, y_row + rng.normal(0, 0.1), yaw, False))
            x += SIZE_STATS[name][0][0] + rng.uniform(0.8, 6.0)
    return cands


def _traffic(lay: _Layout, rng: np.random.Generator) -> list:
    """Vehicles in every lane (none on the ego vehicle's spot)."""
    cands = []
    for k in range(2 * lay.lanes):
        y_lane = lay.mid + (k - lay.lanes + 0.5) * lay.lane_w
        forward = y_lane < lay.mid
        x = -70 + rng.uniform(0, 25)
        while x < 110:
            name = str(rng.choice(["Car", "Van", "Truck", "Tram"], p=[0.8, 0.1, 0.07, 0.03]))
            ego = abs(y_lane) < 0.5 and -14 < x < 10
            if not ego and rng.random() < 0.55:
                yaw = (0.0 if forward else np.pi) + rng.normal(0, 0.03)
                cands.append((name, x, y_lane + rng.normal(0, 0.25), yaw, False))
            x += rng.uniform(10, 35)
    return cands


def _crossing(streets, lay: _Layout, rng: np.random.Generator) -> list:
    """Cars in the side streets, crossing the road."""
    cands = []
    for sx in streets:
        if rng.random() < 0.4:
            y = rng.uniform(lay.y_lo + 1.5, lay.y_hi - 1.5)
            cands.append(("Car", sx, y, rng.choice([-1, 1]) * np.pi / 2 + rng.normal(0, 0.2), False))
    return cands


def _walkers(lay: _Layout, rng: np.random.Generator) -> list:
    """Pedestrians on the sidewalks (some in pairs), one crossing now and then, a sitting person."""
    cands = []
    for _ in range(int(rng.poisson(4.0))):
        side = rng.choice([-1, 1])
        y = (rng.uniform(lay.walk_lo + 0.5, lay.y_lo - 0.5) if side < 0
             else rng.uniform(lay.y_hi + 0.5, lay.walk_hi - 0.5))
        yaw = ((rng.choice([0.0, np.pi]) + rng.normal(0, 0.3)) if rng.random() < 0.65
               else rng.uniform(-np.pi, np.pi))
        x = rng.uniform(-25, 60)
        cands.append(("Pedestrian", x, y, yaw, True))
        if rng.random() < 0.3:
            cands.append(("Pedestrian", x + rng.uniform(0.8, 1.5), y + rng.uniform(-0.6, 0.6),
                          yaw + rng.normal(0, 0.2), True))
    if rng.random() < 0.15:
        cands.append(("Pedestrian", rng.uniform(5, 40), rng.uniform(lay.y_lo + 1, lay.y_hi - 1),
                      rng.choice([-1, 1]) * np.pi / 2 + rng.normal(0, 0.2), False))
    if rng.random() < 0.15:
        y = rng.uniform(lay.walk_lo + 0.6, lay.y_lo - 0.6)
        cands.append(("Person_sitting", rng.uniform(3, 40), y, rng.uniform(-np.pi, np.pi), True))
    return cands


def _riders_and_misc(lay: _Layout, rng: np.random.Generator) -> list:
    """Cyclists along the road edges and the odd Misc object on a sidewalk."""
    cands = []
    for _ in range(int(rng.poisson(1.8))):
        forward = rng.random() < 0.6
        edge = (lay.mid - lay.lanes * lay.lane_w + 0.6 if forward
                else lay.mid + lay.lanes * lay.lane_w - 0.6)
        cands.append(("Cyclist", rng.uniform(-20, 55), edge + rng.normal(0, 0.15),
                      (0.0 if forward else np.pi) + rng.normal(0, 0.08), False))
    if rng.random() < 0.2:
        y = rng.uniform(lay.walk_lo + 1.0, lay.y_lo - 1.0)
        cands.append(("Misc", rng.uniform(-10, 50), y, rng.normal(0, 0.1), True))
    return cands


def _place(scene: Scene, cands: list, obstacles: np.ndarray, rng: np.random.Generator,
           calib: Calib, image_shape: Tuple[int, int], view_distance: float,
           max_in_view: int) -> None:
    """Adds the candidates in random order: each one that overlaps neither the ego vehicle, an
    accepted object nor an obstacle, while at most ``max_in_view`` lie in the camera's view."""
    accepted = np.zeros((0, 7))
    in_view = 0
    for i in rng.permutation(len(cands)):
        name, x, y, yaw, _ = cands[i]
        l, w, h = sample_size(name, rng)
        yaw = float(np.arctan2(np.sin(yaw), np.cos(yaw)))
        z = float(scene.ground_height(x, y)) + h / 2
        box = np.array([x, y, z, l, w, h, yaw])
        if (overlaps_any(box, _EGO, 0.5) or overlaps_any(box, accepted, 0.25)
                or overlaps_any(box, obstacles, 0.15)):
            continue
        visible = _in_view(box, calib, image_shape, view_distance)
        if visible and in_view >= max_in_view:
            continue
        in_view += visible
        obj_refl = rng.uniform(0.1, 0.8) if name in ("Car", "Van", "Truck", "Tram", "Misc") \
            else rng.uniform(0.2, 0.6)
        scene.objects.append(make_object(name, box, object_parts(name, l, w, h, rng), obj_refl))
        accepted = np.concatenate([accepted, box[None]])
