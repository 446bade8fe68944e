"""Readers and writers of KITTI 3D-object files: velodyne .bin, label_2 / result .txt, calib .txt,
image sizes from PNG headers, and ImageSets id lists.

Every reader raises :class:`KittiFormatError` naming the file (and line) on missing, truncated or
malformed input; every writer writes atomically.
"""
import math
import os
import struct
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from pointdistiller.kitti_tools.fileio import atomic_open, atomic_write_bytes

from pointdistiller.kitti_tools.calib import Calib
from pointdistiller.kitti_tools.errors import KittiFormatError

# Every object type that appears in KITTI label_2 files.
KITTI_TYPES = ("Car", "Van", "Truck", "Pedestrian", "Person_sitting", "Cyclist", "Tram", "Misc",
               "DontCare")
_TYPE_BY_LOWER = {t.lower(): t for t in KITTI_TYPES}


# ---------------------------------------------------------------------------------------------
# velodyne
# ---------------------------------------------------------------------------------------------
def read_velodyne(path: str, num_features: int = 4, nan: str = "error") -> np.ndarray:
    """Reads a velodyne scan: float32 little-endian, ``num_features`` values per point.

    Args:
        path: the ``.bin`` file.
        num_features: values per point (4 for KITTI: x, y, z, reflectance).
        nan: ``"error"`` raises on NaN/inf values; ``"drop"`` removes those points.

    Returns:
        ``[N, num_features]`` float32 array.
    """
    if nan not in ("error", "drop"):
        raise ValueError(f"read_velodyne: nan must be 'error' or 'drop', got {nan!r}")
    try:
        size = os.path.getsize(path)
        raw = np.fromfile(path, dtype="<f4")
    except FileNotFoundError:
        raise KittiFormatError(path, "velodyne file not found") from None
    except OSError as exc:
        raise KittiFormatError(path, f"cannot read velodyne file ({exc})") from None
    # np.fromfile silently drops a trailing partial value, so check the byte size itself.
    if size % (num_features * 4) or raw.size * 4 != size:
        raise KittiFormatError(
            path, f"file size {size} bytes is not a multiple of {num_features * 4} "
                  f"({num_features} float32 values per point): truncated or not a velodyne scan")
    points = raw.reshape(-1, num_features).astype(np.float32, copy=False)
    finite = np.isfinite(points).all(axis=1)
    if not finite.all():
        if nan == "error":
            raise KittiFormatError(
                path, f"{int((~finite).sum())} of {len(points)} points hold NaN or inf values "
                      f"(first at point {int(np.argmin(finite))})")
        points = points[finite]
    return points


def write_velodyne(path: str, points: np.ndarray) -> None:
    """Writes ``[N, C]`` points as float32 little-endian, atomically."""
    atomic_write_bytes(path, np.ascontiguousarray(points, dtype="<f4").tobytes())


# ---------------------------------------------------------------------------------------------
# labels and results
# ---------------------------------------------------------------------------------------------
@dataclass
class KittiObjects:
    """The objects of one label_2 (15 fields) or result (16 fields) file, as column arrays.

    Camera-frame conventions of KITTI: ``location`` is the bottom centre of the box in rectified
    camera coordinates (metres, y down), ``hwl`` the size in file order (height, width, length),
    ``rotation_y`` the yaw about the camera y axis, ``bbox`` the 2D box (x1, y1, x2, y2) in pixels.

    Attributes:
        name: ``[n]`` object types (canonical spelling of ``KITTI_TYPES``).
        truncated: ``[n]`` float64 in [0, 1] (-1 for DontCare).
        occluded: ``[n]`` int64 0..3 (-1 for DontCare).
        alpha: ``[n]`` float64 observation angle.
        bbox: ``[n, 4]`` float64.
        hwl: ``[n, 3]`` float64.
        location: ``[n, 3]`` float64.
        rotation_y: ``[n]`` float64.
        score: ``[n]`` float64 for results, None for ground truth.
    """

    name: np.ndarray
    truncated: np.ndarray
    occluded: np.ndarray
    alpha: np.ndarray
    bbox: np.ndarray
    hwl: np.ndarray
    location: np.ndarray
    rotation_y: np.ndarray
    score: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.name)

    @staticmethod
    def empty(with_score: bool = False) -> "KittiObjects":
        return KittiObjects(
            name=np.zeros(0, dtype=object), truncated=np.zeros(0), occluded=np.zeros(0, np.int64),
            alpha=np.zeros(0), bbox=np.zeros((0, 4)), hwl=np.zeros((0, 3)),
            location=np.zeros((0, 3)), rotation_y=np.zeros(0),
            score=np.zeros(0) if with_score else None)

    def select(self, mask) -> "KittiObjects":
        """A new KittiObjects with the rows picked by a boolean mask or index array."""
        return KittiObjects(
            name=self.name[mask], truncated=self.truncated[mask], occluded=self.occluded[mask],
            alpha=self.alpha[mask], bbox=self.bbox[mask], hwl=self.hwl[mask],
            location=self.location[mask], rotation_y=self.rotation_y[mask],
            score=None if self.score is None else self.score[mask])


def parse_label_lines(lines: Iterable[str], path: str = "<string>",
                      kind: str = "any") -> KittiObjects:
    """Parses label/result lines (any whitespace between fields; blank lines skipped).

    Args:
        lines: the lines of one file.
        path: the file name used in error messages.
        kind: ``"label"`` (15 fields), ``"result"`` (16 fields) or ``"any"`` (15 or 16, the same
            count on every line).

    Raises:
        KittiFormatError: ``path:line:`` for a wrong field count, an unknown type, a non-numeric or
            non-finite value.
    """
    allowed = {"label": (15,), "result": (16,), "any": (15, 16)}[kind]
    names, values, count = [], [], None
    for lineno, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) not in allowed or (count is not None and len(fields) != count):
            want = " or ".join(str(a) for a in allowed) if count is None else str(count)
            raise KittiFormatError(path, f"expected {want} fields, found {len(fields)}", lineno)
        count = len(fields)
        canonical = _TYPE_BY_LOWER.get(fields[0].lower())
        if canonical is None:
            raise KittiFormatError(
                path, f"unknown object type {fields[0]!r} (known: {', '.join(KITTI_TYPES)})", lineno)
        try:
            nums = [float(v) for v in fields[1:]]
        except ValueError:
            bad = next(v for v in fields[1:] if not _is_float(v))
            raise KittiFormatError(path, f"value {bad!r} is not a number", lineno) from None
        if not all(math.isfinite(v) for v in nums):
            raise KittiFormatError(path, "NaN or inf value", lineno)
        names.append(canonical)
        values.append(nums)
    if not names:
        return KittiObjects.empty(with_score=(kind == "result"))
    arr = np.asarray(values, dtype=np.float64)
    return KittiObjects(
        name=np.asarray(names, dtype=object), truncated=arr[:, 0], occluded=arr[:, 1].astype(np.int64),
        alpha=arr[:, 2], bbox=arr[:, 3:7], hwl=arr[:, 7:10], location=arr[:, 10:13],
        rotation_y=arr[:, 13], score=arr[:, 14] if count == 16 else None)


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def read_label(path: str, kind: str = "label") -> KittiObjects:
    """Reads a label_2 file (``kind="label"``), a result file (``"result"``) or either (``"any"``)."""
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
    except FileNotFoundError:
        raise KittiFormatError(path, "label file not found") from None
    return parse_label_lines(lines, path, kind)


def format_objects(objects: KittiObjects) -> str:
    """KITTI text of ``objects`` (``%.2f`` like the label files; scores ``%.4f``)."""
    out = []
    for i in range(len(objects)):
        row = [objects.name[i], f"{objects.truncated[i]:.2f}", str(int(objects.occluded[i])),
               f"{objects.alpha[i]:.2f}"]
        row += [f"{v:.2f}" for v in objects.bbox[i]]
        row += [f"{v:.2f}" for v in objects.hwl[i]]
        row += [f"{v:.2f}" for v in objects.location[i]]
        row.append(f"{objects.rotation_y[i]:.2f}")
        if objects.score is not None:
            row.append(f"{objects.score[i]:.4f}")
        out.append(" ".join(row))
    return "".join(line + "\n" for line in out)


def write_label(path: str, objects: KittiObjects) -> None:
    """Writes a label or result file atomically."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(format_objects(objects))


# ---------------------------------------------------------------------------------------------
# calibration
# ---------------------------------------------------------------------------------------------
_CALIB_SHAPES = {"P0": (3, 4), "P1": (3, 4), "P2": (3, 4), "P3": (3, 4), "R0_rect": (3, 3),
                 "Tr_velo_to_cam": (3, 4), "Tr_imu_to_velo": (3, 4)}
_CALIB_REQUIRED = ("P2", "R0_rect", "Tr_velo_to_cam")


def read_calib(path: str) -> Calib:
    """Reads a KITTI calib file (``KEY: v v v ...`` lines; ``R0_rect`` 9 values, others 12).

    ``P2``, ``R0_rect`` and ``Tr_velo_to_cam`` are required; ``P0``, ``P1``, ``P3`` and
    ``Tr_imu_to_velo`` are read when present. Other keys (e.g. ``Tr_cam_to_road``) are ignored.
    """
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
    except FileNotFoundError:
        raise KittiFormatError(path, "calib file not found") from None
    mats: Dict[str, np.ndarray] = {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        key, sep, rest = line.partition(":")
        key = key.strip()
        if not sep:
            raise KittiFormatError(path, "expected 'KEY: values'", lineno)
        if key == "R0":  # some tools write R0 instead of R0_rect
            key = "R0_rect"
        if key not in _CALIB_SHAPES:
            continue
        shape = _CALIB_SHAPES[key]
        try:
            vals = np.array([float(v) for v in rest.split()], dtype=np.float64)
        except ValueError:
            raise KittiFormatError(path, f"{key}: non-numeric value", lineno) from None
        if vals.size != shape[0] * shape[1]:
            raise KittiFormatError(
                path, f"{key}: expected {shape[0] * shape[1]} values, found {vals.size}", lineno)
        if not np.isfinite(vals).all():
            raise KittiFormatError(path, f"{key}: NaN or inf value", lineno)
        mats[key] = vals.reshape(shape)
    missing = [k for k in _CALIB_REQUIRED if k not in mats]
    if missing:
        raise KittiFormatError(path, f"missing calibration entries: {', '.join(missing)}")
    return Calib(**mats)


def format_calib(calib: Calib) -> str:
    """KITTI calib text (the 7 standard keys; absent optional matrices written as zeros/identity)."""
    lines = []
    for key in ("P0", "P1", "P2", "P3", "R0_rect", "Tr_velo_to_cam", "Tr_imu_to_velo"):
        mat = getattr(calib, key)
        if mat is None:
            mat = calib.P2 if key.startswith("P") else np.eye(3, 4)
        lines.append(key + ": " + " ".join(f"{v:.12e}" for v in np.asarray(mat).ravel()))
    return "\n".join(lines) + "\n"


def write_calib(path: str, calib: Calib) -> None:
    """Writes a calib file atomically."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(format_calib(calib))


# ---------------------------------------------------------------------------------------------
# images, id lists
# ---------------------------------------------------------------------------------------------
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def read_image_size(path: str) -> Tuple[int, int]:
    """``(height, width)`` of a PNG from its IHDR header (the pixels are not decoded)."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except FileNotFoundError:
        raise KittiFormatError(path, "image file not found") from None
    if len(head) < 24 or head[:8] != _PNG_MAGIC or head[12:16] != b"IHDR":
        raise KittiFormatError(path, "not a PNG file (bad header)")
    width, height = struct.unpack(">II", head[16:24])
    return int(height), int(width)


def write_png_header_only(path: str, height: int, width: int) -> None:
    """Writes a minimal valid 8-bit greyscale PNG of the given size, all zero (for synthetic scenes,
    where only the image size matters)."""
    import zlib

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    raw = b"".join(b"\x00" + b"\x00" * width for _ in range(height))
    data = _PNG_MAGIC + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    atomic_write_bytes(path, data)


def read_ids(path: str) -> List[str]:
    """Frame ids of an ImageSets file, one per line (blank lines skipped)."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]
    except FileNotFoundError:
        raise KittiFormatError(path, "id list not found") from None


def write_ids(path: str, ids: Sequence[str]) -> None:
    """Writes an ImageSets id list atomically."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write("".join(f"{i}\n" for i in ids))


def frame_paths(root: str, frame_id: str, split: str = "training",
                velodyne: str = "velodyne") -> Dict[str, str]:
    """Paths of one frame's files under a KITTI ``root`` (``root/split/{velodyne,label_2,...}``)."""
    base = os.path.join(root, split)
    return {
        "velodyne": os.path.join(base, velodyne, f"{frame_id}.bin"),
        "label": os.path.join(base, "label_2", f"{frame_id}.txt"),
        "calib": os.path.join(base, "calib", f"{frame_id}.txt"),
        "image": os.path.join(base, "image_2", f"{frame_id}.png"),
    }
