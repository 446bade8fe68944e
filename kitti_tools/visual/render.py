"""Pictures of one frame: bird's-eye view, camera image with projected boxes, and a 3D perspective.

The bird's-eye and camera views are rasterised here with numpy and Pillow (exact, deterministic and
fast: a 120k-point frame takes a few tens of milliseconds); the 3D view uses open3d's offscreen
renderer (Filament on the EGL/Vulkan software driver, no display needed), with post-processing off
so that a render is the same every time; :func:`show_3d` opens the same scene in an interactive
window where a display exists. Ground truth is drawn in white dashed-free thin lines,
detections in their class colour with the score beside the box in the bird's-eye view.

Boxes are LiDAR boxes ``[n, 7]`` ``(x, y, z_centre, l, w, h, yaw)``; see :class:`FrameBoxes`.
"""
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

from pointdistiller.kitti_tools.calib import Calib
from pointdistiller.kitti_tools.geometry import lidar_box_corners

# Class colours (RGB) of detections; ground truth is white.
CLASS_COLOURS: Dict[str, Tuple[int, int, int]] = {
    "Car": (255, 64, 64), "Pedestrian": (64, 160, 255), "Cyclist": (255, 200, 0),
    "Van": (255, 128, 160), "Truck": (200, 100, 255), "Person_sitting": (0, 220, 220),
    "Tram": (150, 255, 150), "Misc": (180, 180, 180)}
GT_COLOUR = (255, 255, 255)
BACKGROUND = (16, 16, 24)
# The 12 edges of a box of lidar_box_corners (bottom face 0-3, top face 4-7), plus a heading mark.
EDGES = ((0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4),
         (0, 4), (1, 5), (2, 6), (3, 7))


def class_colour(name: str) -> Tuple[int, int, int]:
    return CLASS_COLOURS.get(name, (255, 140, 0))


@dataclass
class FrameBoxes:
    """The boxes of one frame: LiDAR ``boxes [n, 7]``, class ``names [n]`` and ``scores [n]``
    (None for ground truth)."""

    boxes: np.ndarray
    names: np.ndarray
    scores: Optional[np.ndarray] = None

    @staticmethod
    def empty(with_scores: bool = False) -> "FrameBoxes":
        return FrameBoxes(np.zeros((0, 7)), np.zeros(0, dtype=object),
                          np.zeros(0) if with_scores else None)

    def __len__(self) -> int:
        return len(self.names)


@dataclass
class BevView:
    """The bird's-eye window: ``x`` forward in ``[x_range)``, ``y`` left in ``[y_range)``, ``scale``
    pixels per metre. Image rows grow towards -x (forward is up), columns towards -y (left is left)."""

    x_range: Tuple[float, float] = (0.0, 70.4)
    y_range: Tuple[float, float] = (-40.0, 40.0)
    scale: float = 10.0

    @property
    def size(self) -> Tuple[int, int]:
        """(height, width) in pixels."""
        return (int(round((self.x_range[1] - self.x_range[0]) * self.scale)),
                int(round((self.y_range[1] - self.y_range[0]) * self.scale)))

    def to_pixels(self, xy: np.ndarray) -> np.ndarray:
        """``[..., 2]`` LiDAR (x, y) metres -> ``[..., 2]`` float (column, row) pixels."""
        col = (self.y_range[1] - xy[..., 1]) * self.scale
        row = (self.x_range[1] - xy[..., 0]) * self.scale
        return np.stack([col, row], axis=-1)


def _colour_by(points: np.ndarray, by: str) -> np.ndarray:
    """``[N, 3]`` uint8 colours: height (z from -2.5 to 1.5 m) or intensity (0 to 1), viridis-like."""
    if by == "height":
        t = np.clip((points[:, 2] + 2.5) / 4.0, 0.0, 1.0)
    elif by == "intensity":
        t = np.clip(points[:, 3] if points.shape[1] > 3 else np.zeros(len(points)), 0.0, 1.0)
    else:
        raise ValueError(f"colour must be 'height' or 'intensity', got {by!r}")
    # a small perceptual ramp: dark blue -> teal -> yellow
    stops = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]],
                     np.float64)
    pos = t * (len(stops) - 1)
    i = np.minimum(pos.astype(np.int64), len(stops) - 2)
    f = (pos - i)[:, None]
    return (stops[i] * (1 - f) + stops[i + 1] * f).astype(np.uint8)


def render_bev(points: np.ndarray, gt: FrameBoxes, dets: FrameBoxes, view: BevView = BevView(),
               colour: str = "height", score_text: bool = True,
               extra_points: Optional[Tuple[np.ndarray, np.ndarray]] = None,
               segments: Optional[np.ndarray] = None) -> np.ndarray:
    """Bird's-eye image ``[H, W, 3]`` uint8: points (one pixel each), ground truth in white, then
    detections in class colours with their scores.

    ``extra_points``: ``(xy [k, 2], rgb [k, 3] uint8)`` drawn as 3x3 dots over everything (e.g. the
    nodes PointDistiller selects); ``segments``: ``[s, 2, 2]`` LiDAR (x, y) line segments drawn
    under them (e.g. kNN edges)."""
    h, w = view.size
    canvas = np.empty((h, w, 3), np.uint8)
    canvas[:] = BACKGROUND
    if len(points):
        px = np.floor(view.to_pixels(points[:, :2])).astype(np.int64)
        inside = (px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h)
        order = np.argsort(points[inside, 2], kind="stable")       # higher points on top
        cols = _colour_by(points[inside], colour)
        px = px[inside][order]
        canvas[px[:, 1], px[:, 0]] = cols[order]
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    if segments is not None and len(segments):
        for seg in view.to_pixels(np.asarray(segments, np.float64)):
            draw.line([tuple(seg[0]), tuple(seg[1])], fill=(200, 200, 200), width=1)
    for boxes, width in ((gt, 1), (dets, 2)):
        if not len(boxes):
            continue
        corners = view.to_pixels(lidar_box_corners(boxes.boxes)[:, :4, :2])
        for i, quad in enumerate(corners):
            rgb = GT_COLOUR if boxes.scores is None else class_colour(str(boxes.names[i]))
            pts = [tuple(p) for p in quad]
            draw.line(pts + [pts[0]], fill=rgb, width=width)
            front = (quad[0] + quad[1]) / 2       # heading: a tick from the centre to the front
            centre = quad.mean(axis=0)
            draw.line([tuple(centre), tuple(front)], fill=rgb, width=width)
            if boxes.scores is not None and score_text:
                draw.text((float(quad[:, 0].max()) + 2, float(quad[:, 1].min()) - 2),
                          f"{boxes.scores[i]:.2f}", fill=rgb)
    if extra_points is not None and len(extra_points[0]):
        xy, rgb = extra_points
        for (c, r), col in zip(view.to_pixels(np.asarray(xy, np.float64)), rgb):
            draw.rectangle([c - 1, r - 1, c + 1, r + 1], fill=tuple(int(v) for v in col))
    return np.asarray(image)


def render_camera(image: Optional[np.ndarray], image_shape: Tuple[int, int], calib: Calib,
                  gt: FrameBoxes, dets: FrameBoxes, points: Optional[np.ndarray] = None) -> np.ndarray:
    """Camera-2 image ``[H, W, 3]`` uint8 with the projected 3D boxes (ground truth white,
    detections in class colours). ``image`` None draws on a dark canvas with the LiDAR points
    projected (coloured by depth), e.g. for synthetic scenes without pixels."""
    h, w = image_shape
    if image is None:
        canvas = np.empty((h, w, 3), np.uint8)
        canvas[:] = BACKGROUND
        if points is not None and len(points):
            uv, depth = calib.lidar_to_image(np.asarray(points[:, :3], np.float64))
            ok = (depth > 0.5) & (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
            uvi = uv[ok].astype(np.int64)
            shade = np.clip(255 - depth[ok] * 4, 60, 255).astype(np.uint8)
            canvas[uvi[:, 1], uvi[:, 0]] = shade[:, None]
    else:
        canvas = np.ascontiguousarray(image[..., :3]).copy()
    pil = Image.fromarray(canvas)
    draw = ImageDraw.Draw(pil)
    for boxes, width in ((gt, 1), (dets, 2)):
        if not len(boxes):
            continue
        corners = lidar_box_corners(boxes.boxes)
        uv, depth = calib.lidar_to_image(corners.reshape(-1, 3))
        uv, depth = uv.reshape(-1, 8, 2), depth.reshape(-1, 8)
        for i in range(len(boxes)):
            if not (depth[i] > 0.1).all():
                continue
            rgb = GT_COLOUR if boxes.scores is None else class_colour(str(boxes.names[i]))
            for a, b in EDGES:
                draw.line([tuple(uv[i, a]), tuple(uv[i, b])], fill=rgb, width=width)
    return np.asarray(pil)


def _scene(points: np.ndarray, gt: FrameBoxes, dets: FrameBoxes, colour: str):
    """open3d geometries of the 3D view: ``(name, geometry, is_lines)``."""
    import open3d as o3d

    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(points[:, :3], np.float64)))
    cloud.colors = o3d.utility.Vector3dVector(_colour_by(points, colour).astype(np.float64) / 255)
    out = [("points", cloud, False)]
    for tag, boxes in (("gt", gt), ("det", dets)):
        for i, corners in enumerate(lidar_box_corners(boxes.boxes) if len(boxes) else []):
            rgb = GT_COLOUR if boxes.scores is None else class_colour(str(boxes.names[i]))
            line_set = o3d.geometry.LineSet(o3d.utility.Vector3dVector(corners),
                                            o3d.utility.Vector2iVector(np.asarray(EDGES)))
            line_set.colors = o3d.utility.Vector3dVector(np.tile(np.asarray(rgb) / 255, (12, 1)))
            out.append((f"{tag}{i}", line_set, True))
    return out


EYE, CENTRE = (-12.0, 0.0, 14.0), (22.0, 0.0, 0.0)


def render_3d(points: np.ndarray, gt: FrameBoxes, dets: FrameBoxes, size: Tuple[int, int] = (720, 1280),
              colour: str = "height", eye: Sequence[float] = EYE,
              centre: Sequence[float] = CENTRE) -> np.ndarray:
    """3D perspective ``[H, W, 3]`` uint8 from behind and above the vehicle (open3d offscreen)."""
    import open3d as o3d

    h, w = size
    renderer = o3d.visualization.rendering.OffscreenRenderer(w, h)
    scene = renderer.scene
    scene.set_background([c / 255 for c in BACKGROUND] + [1.0])
    scene.view.set_post_processing(False)      # no temporal effects: the same picture every time
    material = o3d.visualization.rendering.MaterialRecord()
    material.shader = "defaultUnlit"
    material.point_size = 2.0
    lines = o3d.visualization.rendering.MaterialRecord()
    lines.shader = "unlitLine"
    lines.line_width = 2.0
    for name, geometry, is_lines in _scene(points, gt, dets, colour):
        scene.add_geometry(name, geometry, lines if is_lines else material)
    renderer.setup_camera(55.0, list(centre), list(eye), [0.0, 0.0, 1.0])
    return np.asarray(renderer.render_to_image()).copy()


class DisplayError(RuntimeError):
    """No display to open a window on (the message says what to do instead)."""


def check_display() -> str:
    """The display a window would open on; :class:`DisplayError` where there is none."""
    import os

    display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    if not display:
        raise DisplayError("--show needs a display (neither DISPLAY nor WAYLAND_DISPLAY is set); "
                           "without --show the picture is rendered headless to PNG")
    return display


def show_3d(points: np.ndarray, gt: FrameBoxes, dets: FrameBoxes, colour: str = "height",
            title: str = "pd-vis", size: Tuple[int, int] = (720, 1280),
            close_after: Optional[float] = None, screenshot: Optional[str] = None) -> None:
    """The 3D view in an interactive open3d window (rotate, pan and zoom with the mouse; ``h``
    lists the keys), starting from the camera of :func:`render_3d`; returns when the window is
    closed, or after ``close_after`` seconds. ``screenshot``: a PNG of the window's last picture.
    :class:`DisplayError` where no display exists (neither ``DISPLAY`` nor ``WAYLAND_DISPLAY``) or
    the window cannot be opened."""
    import time

    display = check_display()
    import open3d as o3d

    vis = o3d.visualization.Visualizer()
    h, w = size
    if not vis.create_window(window_name=title, width=w, height=h):
        raise DisplayError(f"--show: cannot open a window on display {display!r} (no OpenGL "
                           f"there?); without --show the picture is rendered headless to PNG")
    try:
        for _, geometry, _ in _scene(points, gt, dets, colour):
            vis.add_geometry(geometry)
        option = vis.get_render_option()
        option.background_color = np.asarray(BACKGROUND, np.float64) / 255
        option.point_size = 2.0
        view = vis.get_view_control()
        eye, centre = np.asarray(EYE), np.asarray(CENTRE)
        view.set_lookat(centre)
        view.set_front((eye - centre) / np.linalg.norm(eye - centre))
        view.set_up([0.0, 0.0, 1.0])
        view.set_zoom(0.2)
        start = time.monotonic()
        while vis.poll_events():
            vis.update_renderer()
            if close_after is not None and time.monotonic() - start >= close_after:
                break
        if screenshot:
            vis.capture_screen_image(screenshot, do_render=True)
    finally:
        vis.destroy_window()


def compose(panels: Sequence[np.ndarray], titles: Sequence[str], width: int = 1280) -> np.ndarray:
    """The panels stacked vertically, each scaled to ``width`` and captioned."""
    tiles = []
    for panel, title in zip(panels, titles):
        img = Image.fromarray(panel)
        img = img.resize((width, max(1, round(img.height * width / img.width))), Image.BILINEAR)
        tile = Image.new("RGB", (width, img.height + 22), BACKGROUND)
        tile.paste(img, (0, 22))
        ImageDraw.Draw(tile).text((8, 5), title, fill=(230, 230, 230))
        tiles.append(np.asarray(tile))
    return np.concatenate(tiles, axis=0)


def save_png(path: str, image: np.ndarray) -> None:
    """Writes ``image`` as PNG atomically."""
    from pointdistiller.kitti_tools.fileio import atomic_open

    with atomic_open(path, "wb") as f:
        Image.fromarray(image).save(f, format="PNG")
