"""Builds what training reads from a KITTI folder: per-split info files and the GT database.

Output, under ``out`` (default: the KITTI root):

``kitti_infos_<split>.json``
    One per split whose ``ImageSets/<split>.txt`` exists (``test`` reads ``testing/`` and is
    skipped when that folder is absent). ``{"format", "version", "split", "split_dir", "velodyne",
    "frames": [...]}``; each frame holds ``frame_id``, paths relative to the KITTI root
    (``velodyne_path``, ``image_path``, ``calib_path``, ``label_path``), ``velodyne_reduced``
    (True when the cloud file is already cut to the camera view), ``image_shape`` ``[h, w]``,
    ``calib`` (``P2`` 3x4, ``R0_rect`` 3x3, ``Tr_velo_to_cam`` 3x4 as nested lists), ``num_points``
    and ``num_points_fov``, ``sources`` (``[size, mtime_ns]`` of every input file, used to skip
    unchanged frames on a rerun) and, for labelled splits, ``annos``: per object ``name``,
    ``truncated``, ``occluded``, ``alpha``, ``bbox`` [4], ``hwl`` [3], ``location`` [3],
    ``rotation_y``, ``difficulty`` (0 easy / 1 moderate / 2 hard / -1 none, KITTI rules),
    ``num_points_in_gt`` (points of the field-of-view cloud inside the box) and ``gt_boxes_lidar``
    [7] ``(x, y, z_centre, l, w, h, yaw)``. DontCare rows are kept (the evaluator's ignore regions)
    with ``num_points_in_gt`` -1, difficulty -1 and an all-zero LiDAR box.

``gt_database/<id>_<class>_<k>.bin`` and ``kitti_dbinfos_train.json``
    For every non-DontCare object ``k`` (its row in the label file, DontCare rows counted too) of
    the train split: the points of the field-of-view cloud inside its LiDAR box, float32
    ``[n, 4]`` (x, y, z, reflectance) with x, y, z **relative to the box centre** (translated
    only, not rotated: adding the box centre puts them back where they were). The dbinfos file
    lists per class ``{"path" (relative to ``out``), "class", "box" [7], "difficulty",
    "num_points", "frame_id", "gt_index"}``.

Cloud files: frames are read from ``<split_dir>/<velodyne>/<id>.bin``; when ``velodyne`` is the
full-scan folder and that file is absent, ``velodyne_reduced/<id>.bin`` is used instead for that
frame (recorded as ``velodyne_reduced: true``). The field-of-view cut is applied either way (it
keeps every point of an already-reduced cloud), so both give the same kind of cloud.

Safety: every frame is read and checked before anything is written; a bad file raises one
:class:`KittiFormatError` naming it and leaves the previous output untouched. Info files are
replaced atomically; the GT database is built in a staging folder and swapped in. A rerun reuses
frames whose input files kept their size and mtime and rewrites nothing when all are unchanged.
"""
import glob
import hashlib
import json
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from pointdistiller.kitti_tools.fileio import atomic_write_text, check_writable_dir

from pointdistiller.kitti_tools import io as kio
from pointdistiller.kitti_tools.errors import KittiFormatError
from pointdistiller.kitti_tools.geometry import camera_to_lidar_boxes, fov_mask, points_in_boxes

INFO_FORMAT = "pointdistiller.kitti_infos"
DBINFO_FORMAT = "pointdistiller.kitti_dbinfos"
INFO_VERSION = 1
DEFAULT_SPLITS = ("train", "val", "trainval", "test")
DB_FOLDER = "gt_database"

# KITTI's difficulty rules (devkit eval): minimum 2D box height in pixels, maximum occlusion level
# and maximum truncation for easy, moderate, hard.
MIN_HEIGHT = (40.0, 25.0, 25.0)
MAX_OCCLUSION = (0, 1, 2)
MAX_TRUNCATION = (0.15, 0.30, 0.50)


def kitti_difficulty(bbox: np.ndarray, occluded: np.ndarray, truncated: np.ndarray) -> np.ndarray:
    """KITTI difficulty of each object: 0 easy, 1 moderate, 2 hard, -1 none of them.

    Args:
        bbox: ``[n, 4]`` 2D boxes (x1, y1, x2, y2) in pixels.
        occluded: ``[n]`` occlusion levels 0..3.
        truncated: ``[n]`` truncation in [0, 1].

    Returns:
        ``[n]`` int64, the easiest level whose limits the object meets (height >= minimum,
        occlusion <= maximum, truncation <= maximum).
    """
    height = np.asarray(bbox, np.float64).reshape(-1, 4)
    height = height[:, 3] - height[:, 1]
    occluded = np.asarray(occluded).reshape(-1)
    truncated = np.asarray(truncated, np.float64).reshape(-1)
    out = np.full(len(height), -1, dtype=np.int64)
    for level in (2, 1, 0):
        ok = ((height >= MIN_HEIGHT[level]) & (occluded <= MAX_OCCLUSION[level])
              & (truncated <= MAX_TRUNCATION[level]))
        out[ok] = level
    return out


# ---------------------------------------------------------------------------------------------
# one frame
# ---------------------------------------------------------------------------------------------
def _frame_sources(root: str, split_dir: str, frame_id: str, velodyne: str,
                   with_labels: bool) -> Dict[str, str]:
    """Relative paths of a frame's input files, with the velodyne -> velodyne_reduced fallback."""
    rel = {
        "velodyne": os.path.join(split_dir, velodyne, f"{frame_id}.bin"),
        "image": os.path.join(split_dir, "image_2", f"{frame_id}.png"),
        "calib": os.path.join(split_dir, "calib", f"{frame_id}.txt"),
    }
    if with_labels:
        rel["label"] = os.path.join(split_dir, "label_2", f"{frame_id}.txt")
    if velodyne == "velodyne" and not os.path.exists(os.path.join(root, rel["velodyne"])):
        reduced = os.path.join(split_dir, "velodyne_reduced", f"{frame_id}.bin")
        if os.path.exists(os.path.join(root, reduced)):
            rel["velodyne"] = reduced
    return rel


def _stat_sources(root: str, rel: Dict[str, str]) -> Optional[Dict[str, List[int]]]:
    """``{key: [size, mtime_ns]}``, or None if a file is missing."""
    out = {}
    for key, path in sorted(rel.items()):
        try:
            st = os.stat(os.path.join(root, path))
        except OSError:
            return None
        out[key] = [int(st.st_size), int(st.st_mtime_ns)]
    return out


def _label_line_numbers(path: str) -> List[int]:
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        return [i for i, line in enumerate(f, start=1) if line.split()]


def _annotations(objects: kio.KittiObjects, label_path: str, calib, fov_points: np.ndarray):
    """The ``annos`` dict of one frame and its ``[n, 7]`` LiDAR boxes (zeros for DontCare)."""
    care = objects.name != "DontCare"
    if care.any():
        bad = care & ~(objects.hwl > 0).all(axis=1)
        if bad.any():
            line = _label_line_numbers(label_path)[int(np.argmax(bad))]
            raise KittiFormatError(label_path, "object size (h, w, l) must be positive", line)
    boxes = np.zeros((len(objects), 7))
    boxes[care] = camera_to_lidar_boxes(objects.location[care], objects.hwl[care],
                                        objects.rotation_y[care], calib)
    num_points = np.full(len(objects), -1, dtype=np.int64)
    inside = points_in_boxes(fov_points, boxes[care]) if care.any() else np.zeros((0, 0), bool)
    num_points[care] = inside.sum(axis=0)
    difficulty = kitti_difficulty(objects.bbox, objects.occluded, objects.truncated)
    difficulty[~care] = -1
    annos = {
        "name": [str(n) for n in objects.name],
        "truncated": objects.truncated.tolist(),
        "occluded": objects.occluded.astype(int).tolist(),
        "alpha": objects.alpha.tolist(),
        "bbox": objects.bbox.tolist(),
        "hwl": objects.hwl.tolist(),
        "location": objects.location.tolist(),
        "rotation_y": objects.rotation_y.tolist(),
        "difficulty": difficulty.tolist(),
        "num_points_in_gt": num_points.tolist(),
        "gt_boxes_lidar": boxes.tolist(),
    }
    return annos, boxes, inside


def process_frame(root: str, split_dir: str, frame_id: str, velodyne: str = "velodyne",
                  with_labels: bool = True, db_dir: Optional[str] = None,
                  db_prefix: str = DB_FOLDER) -> Tuple[dict, List[dict]]:
    """Reads one frame and returns its info dict and its GT-database entries.

    Args:
        root: KITTI root; ``split_dir`` is ``"training"`` or ``"testing"``.
        db_dir: when given, each non-DontCare object's points (relative to the box centre) are
            written there as ``<id>_<class>_<k>.bin`` and described in the returned entries (whose
            ``path`` is ``<db_prefix>/<file name>``); otherwise the entry list is empty.

    Raises:
        KittiFormatError: a missing or malformed input file, named in the message.
    """
    rel = _frame_sources(root, split_dir, frame_id, velodyne, with_labels)
    path = {k: os.path.join(root, v) for k, v in rel.items()}
    if not os.path.exists(path["velodyne"]) and velodyne == "velodyne":
        raise KittiFormatError(path["velodyne"], f"velodyne file not found (nor "
                                                 f"velodyne_reduced/{frame_id}.bin)")
    calib = kio.read_calib(path["calib"])
    image_shape = kio.read_image_size(path["image"])
    points = kio.read_velodyne(path["velodyne"])
    fov_points = points[fov_mask(points, calib, image_shape)]
    info = {
        "frame_id": frame_id,
        "velodyne_path": rel["velodyne"],
        "velodyne_reduced": os.path.basename(os.path.dirname(rel["velodyne"])) == "velodyne_reduced",
        "image_path": rel["image"],
        "calib_path": rel["calib"],
        "image_shape": [int(image_shape[0]), int(image_shape[1])],
        "calib": {"P2": calib.P2.tolist(), "R0_rect": calib.R0_rect.tolist(),
                  "Tr_velo_to_cam": calib.Tr_velo_to_cam.tolist()},
        "num_points": int(len(points)),
        "num_points_fov": int(len(fov_points)),
    }
    entries: List[dict] = []
    if with_labels:
        info["label_path"] = rel["label"]
        objects = kio.read_label(path["label"], kind="label")
        annos, boxes, inside = _annotations(objects, path["label"], calib, fov_points)
        info["annos"] = annos
        if db_dir is not None:
            care_rows = np.nonzero(objects.name != "DontCare")[0]
            for col, k in enumerate(care_rows):
                name = str(objects.name[k])
                obj_points = fov_points[inside[:, col]].copy()
                obj_points[:, :3] -= boxes[k, :3].astype(np.float32)
                fname = f"{frame_id}_{name}_{k}.bin"
                # Plain write: the staging folder as a whole is swapped in atomically.
                obj_points.astype("<f4").tofile(os.path.join(db_dir, fname))
                entries.append({
                    "path": f"{db_prefix}/{fname}", "class": name, "box": boxes[k].tolist(),
                    "difficulty": int(annos["difficulty"][k]), "num_points": int(len(obj_points)),
                    "frame_id": frame_id, "gt_index": int(k)})
    info["sources"] = _stat_sources(root, rel)
    return info, entries


def _process_job(job: tuple):
    """Pool entry point: returns ``("ok", info, entries)`` or ``("error", path, reason, line)``
    (KittiFormatError does not survive pickling with its fields)."""
    try:
        return ("ok",) + process_frame(*job)
    except KittiFormatError as exc:
        return ("error", exc.path, exc.reason, exc.line)


# ---------------------------------------------------------------------------------------------
# the whole folder
# ---------------------------------------------------------------------------------------------
def _load_json(path: str, fmt: str) -> Optional[dict]:
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != fmt or data.get("version") != INFO_VERSION:
        return None
    return data


def _dump(obj) -> str:
    return json.dumps(obj, separators=(",", ":")) + "\n"


def _write_json(path: str, obj) -> None:
    """Atomic compact JSON, readable by everyone the umask allows (temp files are 0600)."""
    atomic_write_text(path, _dump(obj))
    os.chmod(path, 0o666 & ~_umask())


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _check_ids(ids: Sequence[str], path: str) -> None:
    for lineno, frame_id in enumerate(ids, start=1):
        if "/" in frame_id or "\\" in frame_id or frame_id in (".", ".."):
            raise KittiFormatError(path, f"bad frame id {frame_id!r}", lineno)


def _run_jobs(jobs: List[tuple], workers: int, progress: bool) -> List[tuple]:
    results = []
    bar = None
    if progress and jobs:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc="kitti prepare", unit="frame", leave=False)
    try:
        if workers <= 1 or len(jobs) < 2:
            stream: Iterable = map(_process_job, jobs)
            results = _collect(stream, bar)
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                chunk = max(1, min(32, len(jobs) // (4 * workers)))
                results = _collect(pool.map(_process_job, jobs, chunksize=chunk), bar)
    finally:
        if bar is not None:
            bar.close()
    return results


def _collect(stream: Iterable, bar) -> List[tuple]:
    results = []
    for res in stream:
        if res[0] == "error":
            raise KittiFormatError(res[1], res[2], res[3])
        results.append(res)
        if bar is not None:
            bar.update(1)
    return results


def prepare_kitti(root: str, out: Optional[str] = None, splits: Sequence[str] = DEFAULT_SPLITS,
                  velodyne: str = "velodyne", workers: int = 2, database: bool = True,
                  db_split: str = "train", progress: bool = True, log=print) -> Dict[str, str]:
    """Writes the info files of ``splits`` and the GT database of ``db_split`` (see module doc).

    Args:
        root: KITTI folder holding ``ImageSets/``, ``training/`` (and optionally ``testing/``).
        out: output folder (default ``root``).
        splits: split names; ``ImageSets/<split>.txt`` lists the frame ids. Absent id files (and
            ``test`` without ``testing/``) are skipped with a message.
        velodyne: ``"velodyne"`` (full scans, per-frame fallback to ``velodyne_reduced``) or
            ``"velodyne_reduced"``.
        workers: processes reading frames (1 = in this process).
        database: build the GT database when ``db_split`` is among the prepared splits.
        progress: show a tqdm progress bar.
        log: called with one-line status messages.

    Returns:
        ``{split or "dbinfos": path}`` of every output file now up to date.

    Raises:
        KittiFormatError: a missing or malformed input file; nothing was changed under ``out``.
    """
    if velodyne not in ("velodyne", "velodyne_reduced"):
        raise ValueError(f"velodyne must be 'velodyne' or 'velodyne_reduced', got {velodyne!r}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    root = os.path.abspath(root)
    out_given = out is not None
    out = os.path.abspath(out or root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"KITTI root {root} is not a folder")
    if not os.path.isdir(os.path.join(root, "ImageSets")):
        raise FileNotFoundError(f"{os.path.join(root, 'ImageSets')} not found: prepare needs "
                                f"ImageSets/<split>.txt files listing each split's frame ids")
    check_writable_dir(out, "--out" if out_given else "KITTI root (the output folder)")
    _remove_stale_staging(out)
    plan = _plan_splits(root, splits, log)
    state = _ReuseState.read(root, out, plan, velodyne)
    db = _DatabasePlan.make(out, plan, state, velodyne, db_split if database else None)
    todo = [key for key in state.current if key in db.keys or not state.up_to_date(key)]
    staging = None
    try:
        if db.build:
            os.makedirs(out, exist_ok=True)
            staging = tempfile.mkdtemp(prefix=f".{DB_FOLDER}.staging-", dir=out)
        fresh, db_entries = _read_frames(root, todo, db.keys, staging, velodyne, workers, progress,
                                         log)
        # Everything was read and checked: commit.
        written = {}
        if db.build:
            _swap_database(out, staging)
            staging = None
            _write_db_infos(db, db_split, db_entries, log)
        if db.digest is not None:
            written["dbinfos"] = db.path
        written.update(_write_infos(out, plan, state, fresh, velodyne, log))
        return written
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def _plan_splits(root: str, splits: Sequence[str], log) -> Dict[str, Tuple[str, List[str]]]:
    """``{split: (split folder, frame ids)}`` of the splits whose id file and folder exist; the
    others are reported through ``log`` (an error when none is left)."""
    plan: Dict[str, Tuple[str, List[str]]] = {}
    skipped = []
    for split in dict.fromkeys(splits):
        ids_path = os.path.join(root, "ImageSets", f"{split}.txt")
        split_dir = "testing" if split == "test" else "training"
        if not os.path.isfile(ids_path):
            skipped.append(f"split {split!r}: {ids_path} not found")
            continue
        if not os.path.isdir(os.path.join(root, split_dir)):
            skipped.append(f"split {split!r}: {os.path.join(root, split_dir)} not found")
            continue
        ids = kio.read_ids(ids_path)
        _check_ids(ids, ids_path)
        plan[split] = (split_dir, ids)
    if not plan:
        raise FileNotFoundError("no split to prepare: " + "; ".join(skipped))
    for reason in skipped:
        log(f"prepare: skipping {reason}")
    return plan


@dataclass
class _ReuseState:
    """The info files already in ``out`` and the size/mtime of every planned frame's inputs: frames
    whose inputs are unchanged since their info was written are reused, not read again."""

    old_infos: Dict[str, Optional[dict]]
    reusable: Dict[Tuple[str, str], dict]
    current: Dict[Tuple[str, str], Optional[Dict[str, List[int]]]]

    @staticmethod
    def read(root: str, out: str, plan, velodyne: str) -> "_ReuseState":
        old_infos = {s: _load_json(os.path.join(out, f"kitti_infos_{s}.json"), INFO_FORMAT)
                     for s in plan}
        reusable: Dict[Tuple[str, str], dict] = {}
        for data in old_infos.values():
            if data is None or data.get("velodyne") != velodyne:
                continue
            for info in data.get("frames", []):
                reusable[(data.get("split_dir"), info.get("frame_id"))] = info
        current: Dict[Tuple[str, str], Optional[Dict[str, List[int]]]] = {}
        for split_dir, ids in plan.values():
            for frame_id in ids:
                key = (split_dir, frame_id)
                if key not in current:
                    rel = _frame_sources(root, split_dir, frame_id, velodyne,
                                         split_dir == "training")
                    current[key] = _stat_sources(root, rel)
        return _ReuseState(old_infos, reusable, current)

    def up_to_date(self, key) -> bool:
        old = self.reusable.get(key)
        now = self.current[key]
        return old is not None and now is not None and old.get("sources") == now


@dataclass
class _DatabasePlan:
    """Whether the GT database of ``db_split`` is (re)built: as a whole, when any of its frames
    changed, its digest differs or one of its files is gone."""

    path: str
    digest: Optional[str]
    build: bool
    keys: set

    @staticmethod
    def make(out: str, plan, state: _ReuseState, velodyne: str,
             db_split: Optional[str]) -> "_DatabasePlan":
        path = os.path.join(out, f"kitti_dbinfos_{db_split}.json")
        if db_split is None or db_split not in plan:
            return _DatabasePlan(path, None, False, set())
        split_dir, ids = plan[db_split]
        payload = [INFO_VERSION, {"velodyne": velodyne}, ids,
                   [state.current[(split_dir, i)] for i in ids]]
        digest = hashlib.sha256(_dump(payload).encode()).hexdigest()
        old_db = _load_json(path, DBINFO_FORMAT)
        build = not (old_db is not None and old_db.get("digest") == digest
                     and all(state.up_to_date((split_dir, i)) for i in ids)
                     and _db_files_present(out, old_db))
        return _DatabasePlan(path, digest, build, {(split_dir, i) for i in ids} if build else set())


def _read_frames(root: str, todo, db_keys, staging: Optional[str], velodyne: str, workers: int,
                 progress: bool, log):
    """Reads the frames ``todo`` (writing the GT database files of ``db_keys`` into ``staging``):
    ``({(split folder, id): info}, {class: database entries sorted by frame and object})``."""
    jobs = [(root, sd, fid, velodyne, sd == "training", staging if (sd, fid) in db_keys else None)
            for sd, fid in todo]
    if jobs:
        log(f"prepare: reading {len(jobs)} frame(s) with {min(workers, len(jobs))} worker(s)")
    fresh = {}
    db_entries: Dict[str, List[dict]] = {}
    for (_, info, entries), key in zip(_run_jobs(jobs, workers, progress), todo):
        fresh[key] = info
        for entry in entries:
            db_entries.setdefault(entry["class"], []).append(entry)
    for entries in db_entries.values():
        entries.sort(key=lambda e: (e["frame_id"], e["gt_index"]))
    return fresh, db_entries


def _write_db_infos(db: _DatabasePlan, db_split: str, db_entries, log) -> None:
    _write_json(db.path, {
        "format": DBINFO_FORMAT, "version": INFO_VERSION, "split": db_split,
        "digest": db.digest, "point_features": 4,
        "coordinates": "x, y, z relative to the box centre (translation only)",
        "classes": db_entries})
    log(f"prepare: wrote {db.path} ("
        + ", ".join(f"{c} {len(v)}" for c, v in sorted(db_entries.items())) + ")")


def _write_infos(out: str, plan, state: _ReuseState, fresh, velodyne: str, log) -> Dict[str, str]:
    """Writes each split's info file unless it already lists exactly its frames, none re-read."""
    written = {}
    for split, (split_dir, ids) in plan.items():
        path = os.path.join(out, f"kitti_infos_{split}.json")
        written[split] = path
        old = state.old_infos[split]
        if old is not None and all((split_dir, i) not in fresh for i in ids) and [
                f.get("frame_id") for f in old.get("frames", [])] == ids:
            log(f"prepare: {path} is up to date")
            continue
        frames = [fresh.get((split_dir, i)) or state.reusable[(split_dir, i)] for i in ids]
        _write_json(path, {"format": INFO_FORMAT, "version": INFO_VERSION, "split": split,
                           "split_dir": split_dir, "velodyne": velodyne, "frames": frames})
        log(f"prepare: wrote {path} ({len(frames)} frames)")
    return written


def _db_files_present(out: str, dbinfos: dict) -> bool:
    classes = dbinfos.get("classes")
    if not isinstance(classes, dict):
        return False
    for entries in classes.values():
        for entry in entries:
            if not os.path.isfile(os.path.join(out, entry.get("path", ""))):
                return False
    return True


def _remove_stale_staging(out: str) -> None:
    """Removes the staging folders of GT databases that a killed prepare left in ``out``."""
    for stale in glob.glob(os.path.join(glob.escape(out), f".{DB_FOLDER}.staging-*")):
        if os.path.isdir(stale):
            shutil.rmtree(stale, ignore_errors=True)


def _swap_database(out: str, staging: str) -> None:
    """Replaces ``out/gt_database`` by the staging folder (old one renamed away, then removed)."""
    final = os.path.join(out, DB_FOLDER)
    old = None
    if os.path.exists(final):
        old = tempfile.mkdtemp(prefix=f".{DB_FOLDER}.old-", dir=out)
        os.rmdir(old)
        os.rename(final, old)
    os.rename(staging, final)
    os.chmod(final, 0o777 & ~_umask())
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
