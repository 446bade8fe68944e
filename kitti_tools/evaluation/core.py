"""KITTI 3D-object evaluation with the official devkit's semantics: labelling per class and
difficulty, the two matching passes, the 41 score thresholds, precision/recall/AOS and R11/R40 AP.

The rules are those of ``shared/docs/kitti_eval.md`` section 2 (``evaluate_object.cpp`` and the
python port ``kitti_object_eval_python``); where the two differ this module follows the python port:
DontCare regions absorb false positives only for the 2D metric (for BEV/3D it is a no-op on real
KITTI, whose DontCare 3D fields are -1/-1000), and a class without detections reports AP 0 instead
of being skipped. AOS is computed when there is at least one detection and no detection has
``alpha == -10`` (the C++ rule; the port only looks at the first detection).

Design for speed: the frames are flattened into column arrays with offsets; 2D, BEV and 3D
overlaps of every detection with every GT of its frame are computed once (numba) and reused by all
classes, difficulties and overlap sets; the matching passes are numba loops over frames that only
visit the objects relevant to the class and re-run a frame's matching only when a threshold changes
which of its detections are eligible.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numba
import numpy as np

from pointdistiller.kitti_tools.io import KITTI_TYPES, KittiObjects

from pointdistiller.kitti_tools.evaluation import params
from pointdistiller.kitti_tools.evaluation.overlaps import frame_overlaps

_TYPE_CODE = {name.lower(): code for code, name in enumerate(KITTI_TYPES)}
_CANONICAL_CODE = {name: code for code, name in enumerate(KITTI_TYPES)}
_DONTCARE = _TYPE_CODE["dontcare"]
# pass-1 "no detection yet" score of the devkit: a detection must score above it to be chosen
_NO_DETECTION = -10000000.0
# recall step between two score thresholds (the devkit's 1 / (N_SAMPLE_PTS - 1.0))
_RECALL_STEP = 1.0 / (params.NUM_SAMPLE_POINTS - 1.0)


# ---------------------------------------------------------------------------------------------
# result
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalResult:
    """Precision curves and AP of one evaluation.

    Index order ``[overlap_set, metric, class, difficulty, point]`` with overlap sets
    ``params.OVERLAP_SETS`` ("strict", "loose"), metrics ``params.METRICS`` ("bbox", "bev", "3d"),
    ``classes`` and difficulties ``params.DIFFICULTIES`` ("easy", "moderate", "hard").

    Attributes:
        classes: evaluated class names.
        compute_aos: whether orientation similarity was computed.
        precision: ``[2, 3, C, 3, 41]`` float64 monotone precision envelope at the score thresholds
            (0 beyond the last threshold).
        recall: ``[2, 3, C, 3, 41]`` float64 monotone recall envelope.
        orientation: ``[2, C, 3, 41]`` float64 AOS envelope (2D matching; zeros if not computed).
        num_gt: ``[C, 3]`` int64 valid GT objects per class and difficulty.
        num_frames: number of evaluated frames.
    """

    classes: Tuple[str, ...]
    compute_aos: bool
    precision: np.ndarray
    recall: np.ndarray
    orientation: np.ndarray
    num_gt: np.ndarray
    num_frames: int

    def ap(self, cls: str, metric: str, difficulty: str = "moderate", overlap_set: str = "strict",
           points: int = 40) -> Optional[float]:
        """AP in percent. ``metric``: "bbox", "bev", "3d" or "aos" (None when AOS was not
        computed); ``points``: 40 (R40, official) or 11 (R11)."""
        if points not in (11, 40):
            raise ValueError(f"points must be 11 or 40, got {points!r}")
        if cls not in self.classes:
            raise ValueError(f"cls {cls!r} was not evaluated (classes: {self.classes})")
        c = self.classes.index(cls)
        d = _index(params.DIFFICULTIES, difficulty, "difficulty")
        s = _index(params.OVERLAP_SETS, overlap_set, "overlap_set")
        if metric == "aos":
            if not self.compute_aos:
                return None
            curve = self.orientation[s, c, d]
        else:
            curve = self.precision[s, _index(params.METRICS, metric, "metric"), c, d]
        return float(ap_r40(curve) if points == 40 else ap_r11(curve))

    def to_json_dict(self) -> Dict:
        """``{set: {class: {metric: {"R40": [e, m, h], "R11": [e, m, h]}}}}`` in percent, metrics
        bbox, bev, 3d, aos (aos is None when not computed)."""
        from pointdistiller.kitti_tools.evaluation.report import json_dict

        return json_dict(self)

    def summary(self) -> str:
        """The python port's text block (``Car AP@0.70, 0.70, 0.70:`` ...), lines ending in \\n."""
        from pointdistiller.kitti_tools.evaluation.report import format_summary

        return format_summary(self)

    def ret_dict(self) -> Dict[str, float]:
        """The python port's flat ``ret_dict`` (strict set, R40): ``Car_3d/easy_R40``, ..."""
        from pointdistiller.kitti_tools.evaluation.report import port_ret_dict

        return port_ret_dict(self)


def _index(options: Sequence[str], value: str, name: str) -> int:
    if value not in options:
        raise ValueError(f"{name} must be one of {tuple(options)}, got {value!r}")
    return options.index(value)


def ap_r40(curve: np.ndarray) -> np.ndarray:
    """R40 AP in percent of ``[..., 41]`` precision (or AOS) envelopes: mean of slots 1..40."""
    return np.asarray(curve)[..., 1:41].sum(axis=-1) / 40.0 * 100.0


def ap_r11(curve: np.ndarray) -> np.ndarray:
    """R11 AP in percent of ``[..., 41]`` envelopes: mean of slots 0, 4, ..., 40."""
    return np.asarray(curve)[..., 0:41:4].sum(axis=-1) / 11.0 * 100.0


# ---------------------------------------------------------------------------------------------
# flattened frames
# ---------------------------------------------------------------------------------------------
@dataclass
class _Frames:
    """All frames as column arrays; frame f owns rows ``*_off[f]:*_off[f+1]``."""

    gt_off: np.ndarray
    dt_off: np.ndarray
    pair_off: np.ndarray
    gt_type: np.ndarray
    gt_height: np.ndarray
    gt_occluded: np.ndarray
    gt_truncated: np.ndarray
    gt_alpha: np.ndarray
    dt_type: np.ndarray
    dt_height: np.ndarray
    dt_alpha: np.ndarray
    dt_score: np.ndarray
    iou: Tuple[np.ndarray, np.ndarray, np.ndarray]  # 2D, BEV, 3D per pair slot
    dc_max: np.ndarray


def _type_codes(names: np.ndarray, what: str) -> np.ndarray:
    """``[n]`` int64 index into ``KITTI_TYPES`` of each (case-insensitive) type name."""
    codes = np.array([_CANONICAL_CODE.get(n, -1) for n in names], dtype=np.int64)
    for k in np.flatnonzero(codes < 0):  # non-canonical spelling or unknown type
        code = _TYPE_CODE.get(str(names[k]).lower())
        if code is None:
            raise ValueError(
                f"{what}: unknown object type {names[k]!r} (known: {', '.join(KITTI_TYPES)})")
        codes[k] = code
    return codes


def _check_frame(obj, name: str, need_score: bool) -> None:
    if not isinstance(obj, KittiObjects):
        raise TypeError(f"{name}: expected KittiObjects, got {type(obj).__name__}")
    n = len(obj.name)
    shapes = {"bbox": (n, 4), "hwl": (n, 3), "location": (n, 3), "truncated": (n,),
              "occluded": (n,), "alpha": (n,), "rotation_y": (n,)}
    if need_score:
        if obj.score is None:
            raise ValueError(
                f"{name}: detections need scores (read result files with kind='result')")
        shapes["score"] = (n,)
    for field, shape in shapes.items():
        got = np.shape(getattr(obj, field))
        if got != shape:
            raise ValueError(f"{name}.{field}: expected shape {shape}, got {got}")


def _cat(arrays: List[np.ndarray], width: int = 0, dtype=np.float64) -> np.ndarray:
    shape = (0, width) if width else (0,)
    if not arrays:
        return np.zeros(shape, dtype=dtype)
    return np.ascontiguousarray(np.concatenate(arrays, axis=0), dtype=dtype)


def _flatten(gt_annos: Sequence[KittiObjects], dt_annos: Sequence[KittiObjects],
             used_types: Sequence[int]) -> _Frames:
    n_gt = np.array([len(a) for a in gt_annos], dtype=np.int64)
    n_dt = np.array([len(a) for a in dt_annos], dtype=np.int64)
    gt_off = np.concatenate([[0], np.cumsum(n_gt)]).astype(np.int64)
    dt_off = np.concatenate([[0], np.cumsum(n_dt)]).astype(np.int64)
    pair_off = np.concatenate([[0], np.cumsum(n_gt * n_dt)]).astype(np.int64)

    gt_type = _type_codes(_cat([a.name for a in gt_annos], dtype=object), "gt_annos")
    dt_type = _type_codes(_cat([a.name for a in dt_annos], dtype=object), "dt_annos")
    gt_bbox = _cat([a.bbox for a in gt_annos], 4)
    dt_bbox = _cat([a.bbox for a in dt_annos], 4)
    gt_box = _cat([np.concatenate([a.location, a.hwl, a.rotation_y[:, None]], 1)
                   for a in gt_annos], 7)
    dt_box = _cat([np.concatenate([a.location, a.hwl, a.rotation_y[:, None]], 1)
                   for a in dt_annos], 7)
    gt_used = np.isin(gt_type, np.asarray(used_types, dtype=np.int64))
    iou_2d, iou_bev, iou_3d, dc_max = frame_overlaps(
        gt_off, dt_off, pair_off, gt_bbox, gt_box, gt_used, gt_type == _DONTCARE, dt_bbox, dt_box)
    return _Frames(
        gt_off=gt_off, dt_off=dt_off, pair_off=pair_off, gt_type=gt_type,
        gt_height=gt_bbox[:, 3] - gt_bbox[:, 1],
        gt_occluded=_cat([a.occluded for a in gt_annos], dtype=np.int64),
        gt_truncated=_cat([a.truncated for a in gt_annos]),
        gt_alpha=_cat([a.alpha for a in gt_annos]),
        dt_type=dt_type, dt_height=np.abs(dt_bbox[:, 3] - dt_bbox[:, 1]),
        dt_alpha=_cat([a.alpha for a in dt_annos]),
        dt_score=_cat([a.score for a in dt_annos]),
        iou=(iou_2d, iou_bev, iou_3d), dc_max=dc_max)


def _labels(frames: _Frames, cls: str, difficulty: int) -> Tuple[np.ndarray, np.ndarray, int]:
    """``(ignored_gt [G] int8, ignored_dt [D] int8, n_gt)`` for one class and difficulty:
    0 valid, 1 ignored (may absorb a match), -1 not part of this class's evaluation."""
    is_cls = frames.gt_type == _TYPE_CODE[cls.lower()]
    neighbour = params.NEIGHBOUR[cls]
    is_neighbour = (frames.gt_type == _TYPE_CODE[neighbour.lower()] if neighbour is not None
                    else np.zeros_like(is_cls))
    too_hard = ((frames.gt_occluded > params.MAX_OCCLUSION[difficulty])
                | (frames.gt_truncated > params.MAX_TRUNCATION[difficulty])
                | (frames.gt_height <= params.MIN_HEIGHT[difficulty]))
    ignored_gt = np.full(len(is_cls), -1, dtype=np.int8)
    ignored_gt[is_neighbour | (is_cls & too_hard)] = 1
    ignored_gt[is_cls & ~too_hard] = 0
    ignored_dt = np.full(len(frames.dt_type), -1, dtype=np.int8)
    ignored_dt[frames.dt_type == _TYPE_CODE[cls.lower()]] = 0
    ignored_dt[frames.dt_height < params.MIN_HEIGHT[difficulty]] = 1
    return ignored_gt, ignored_dt, int(np.count_nonzero(ignored_gt == 0))


# ---------------------------------------------------------------------------------------------
# matching (numba)
# ---------------------------------------------------------------------------------------------
@numba.njit(cache=True)
def _max_count(off):
    best = 0
    for f in range(off.shape[0] - 1):
        best = max(best, off[f + 1] - off[f])
    return best


@numba.njit(cache=True)
def _tp_scores(gt_off, dt_off, pair_off, iou, ignored_gt, ignored_dt, score, theta):
    """Pass 1 (devkit ``compute_fp = false``): each GT in file order takes the unassigned candidate
    with overlap > theta and the highest score. Returns the scores of the true positives."""
    out = np.empty(ignored_gt.shape[0])
    n_out = 0
    cap = _max_count(dt_off)
    dets = np.empty(cap, dtype=np.int64)
    assigned = np.zeros(cap, dtype=np.bool_)
    for f in range(gt_off.shape[0] - 1):
        g0 = gt_off[f]
        ng = gt_off[f + 1] - g0
        d0 = dt_off[f]
        nd = 0
        for j in range(dt_off[f + 1] - d0):
            if ignored_dt[d0 + j] != -1:
                dets[nd] = j
                nd += 1
        if nd == 0:
            continue
        assigned[:nd] = False
        base = pair_off[f]
        for i in range(ng):
            ig = ignored_gt[g0 + i]
            if ig == -1:
                continue
            best = -1
            best_score = _NO_DETECTION
            for k in range(nd):
                if assigned[k]:
                    continue
                j = dets[k]
                if iou[base + j * ng + i] > theta and score[d0 + j] > best_score:
                    best = k
                    best_score = score[d0 + j]
            if best < 0:
                continue
            assigned[best] = True
            if ig == 0 and ignored_dt[d0 + dets[best]] == 0:
                out[n_out] = best_score
                n_out += 1
    return out[:n_out]


@numba.njit(cache=True)
def score_thresholds(tp_scores, num_gt):
    """The devkit's ``getThresholds``: up to 41 scores taken from the descending TP scores near
    recall k/40 (float64 accumulation of 1/40, exactly as the devkit)."""
    v = np.sort(tp_scores)[::-1]
    out = np.empty(v.shape[0])
    n_out = 0
    current = 0.0
    last = v.shape[0] - 1
    for i in range(v.shape[0]):
        l_recall = (i + 1) / num_gt
        r_recall = (i + 2) / num_gt if i < last else l_recall
        if (r_recall - current) < (current - l_recall) and i < last:
            continue
        out[n_out] = v[i]
        n_out += 1
        current += _RECALL_STEP
    return out[:n_out]


@numba.njit(cache=True)
def _match_frame(t, ng, nd, dets, cand_start, cand, assigned, base, g0, d0, iou, ignored_gt,
                 ignored_dt, score, gt_alpha, dt_alpha, dc_max, use_dontcare, theta):
    """Pass 2 (devkit ``compute_fp = true``) of one frame at score threshold ``t``: each GT in file
    order takes, among the unassigned eligible candidates (overlap > theta), the valid detection
    with the highest overlap, or else the first height-ignored one. ``cand[cand_start[i]:
    cand_start[i+1]]`` are GT i's candidates (indices into ``dets``, in file order).
    Returns ``(tp, fp, fn, similarity)``."""
    assigned[:nd] = False
    tp = 0
    fn = 0
    similarity = 0.0
    for i in range(ng):
        ig = ignored_gt[g0 + i]
        if ig == -1:
            continue
        best = -1
        best_ignored = False
        max_overlap = 0.0
        for c in range(cand_start[i], cand_start[i + 1]):
            k = cand[c]
            if assigned[k]:
                continue
            j = dets[k]
            if score[d0 + j] < t:
                continue
            o = iou[base + j * ng + i]
            igd = ignored_dt[d0 + j]
            if igd == 0 and (o > max_overlap or best_ignored):
                max_overlap = o
                best = k
                best_ignored = False
            elif igd == 1 and best < 0:
                best = k
                best_ignored = True
        if best < 0:
            if ig == 0:
                fn += 1
        else:
            assigned[best] = True
            if ig == 0 and not best_ignored:
                tp += 1
                similarity += (1.0 + np.cos(gt_alpha[g0 + i] - dt_alpha[d0 + dets[best]])) / 2.0
    fp = 0
    for k in range(nd):
        j = dets[k]
        if assigned[k] or ignored_dt[d0 + j] != 0 or score[d0 + j] < t:
            continue
        if use_dontcare and dc_max[d0 + j] > theta:
            continue  # inside a DontCare region
        fp += 1
    return tp, fp, fn, similarity


@numba.njit(cache=True)
def _relevant_dets(ignored_dt, d0, n, dets):
    """Writes the frame's detections that are not ignored (``ignored_dt != -1``) into ``dets``;
    returns (their number, how many of them are valid, ``ignored_dt == 0``)."""
    nd = 0
    n_valid = 0
    for j in range(n):
        if ignored_dt[d0 + j] != -1:
            dets[nd] = j
            nd += 1
            if ignored_dt[d0 + j] == 0:
                n_valid += 1
    return nd, n_valid


@numba.njit(cache=True)
def _candidates(ng, nd, dets, ignored_gt, g0, base, iou, theta, cand_start, cand):
    """For each GT of the frame, its candidate detections (overlap > theta) in file order:
    ``cand[cand_start[i]:cand_start[i + 1]]``."""
    n_cand = 0
    for i in range(ng):
        cand_start[i] = n_cand
        if ignored_gt[g0 + i] == -1:
            continue
        for k in range(nd):
            if iou[base + dets[k] * ng + i] > theta:
                cand[n_cand] = k
                n_cand += 1
    cand_start[ng] = n_cand


@numba.njit(cache=True)
def _scores_descending(score, d0, dets, nd, desc):
    """The scores of the frame's relevant detections, descending (insertion sort: frames are
    small)."""
    for m in range(nd):
        s = score[d0 + dets[m]]
        p = m
        while p > 0 and desc[p - 1] < s:
            desc[p] = desc[p - 1]
            p -= 1
        desc[p] = s


@numba.njit(cache=True)
def _pr_counts(gt_off, dt_off, pair_off, iou, ignored_gt, ignored_dt, score, gt_alpha, dt_alpha,
               dc_max, use_dontcare, theta, thresholds):
    """Pass 2 at every threshold (``thresholds`` non-increasing), summed over frames: ``[K, 4]``
    (tp, fp, fn, similarity)."""
    num_t = thresholds.shape[0]
    out = np.zeros((num_t, 4))
    cap_d = _max_count(dt_off)
    cap_g = _max_count(gt_off)
    dets = np.empty(cap_d, dtype=np.int64)
    desc = np.empty(cap_d)
    assigned = np.zeros(cap_d, dtype=np.bool_)
    cand_start = np.empty(cap_g + 1, dtype=np.int64)
    cand = np.empty(cap_g * cap_d, dtype=np.int64)
    for f in range(gt_off.shape[0] - 1):
        g0 = gt_off[f]
        ng = gt_off[f + 1] - g0
        d0 = dt_off[f]
        base = pair_off[f]
        nd, n_valid_dt = _relevant_dets(ignored_dt, d0, dt_off[f + 1] - d0, dets)
        n_valid = 0
        for i in range(ng):
            if ignored_gt[g0 + i] == 0:
                n_valid += 1
        if n_valid == 0 and n_valid_dt == 0:
            continue  # no TP, FP or FN at any threshold
        _candidates(ng, nd, dets, ignored_gt, g0, base, iou, theta, cand_start, cand)
        _scores_descending(score, d0, dets, nd, desc)
        # The thresholds descend, so the eligible detections (score >= t) only grow; the frame's
        # result changes only when that set does.
        eligible = 0
        prev_eligible = -1
        tp, fp, fn, sim = 0, 0, 0, 0.0
        for k in range(num_t):
            t = thresholds[k]
            while eligible < nd and desc[eligible] >= t:
                eligible += 1
            if eligible != prev_eligible:
                prev_eligible = eligible
                if eligible == 0:
                    tp, fp, fn, sim = 0, 0, n_valid, 0.0
                else:
                    tp, fp, fn, sim = _match_frame(
                        t, ng, nd, dets, cand_start, cand, assigned, base, g0, d0, iou,
                        ignored_gt, ignored_dt, score, gt_alpha, dt_alpha, dc_max, use_dontcare,
                        theta)
            out[k, 0] += tp
            out[k, 1] += fp
            out[k, 2] += fn
            out[k, 3] += sim
    return out


def _curves(frames: _Frames, metric: int, theta: float, ignored_gt: np.ndarray,
            ignored_dt: np.ndarray, n_gt: int, with_aos: bool):
    """``(precision, recall, aos)`` envelopes, each ``[41]`` float64, for one matching setup."""
    iou = frames.iou[metric]
    n = params.NUM_SAMPLE_POINTS
    precision, recall, aos = np.zeros(n), np.zeros(n), np.zeros(n)
    if n_gt == 0:
        return precision, recall, aos
    scores = _tp_scores(frames.gt_off, frames.dt_off, frames.pair_off, iou, ignored_gt, ignored_dt,
                        frames.dt_score, theta)
    thresholds = score_thresholds(scores, n_gt)
    if len(thresholds) > n:
        raise RuntimeError(f"internal error: {len(thresholds)} score thresholds (at most {n})")
    pr = _pr_counts(frames.gt_off, frames.dt_off, frames.pair_off, iou, ignored_gt, ignored_dt,
                    frames.dt_score, frames.gt_alpha, frames.dt_alpha, frames.dc_max,
                    metric == 0, theta, thresholds)
    k = len(thresholds)
    tp, fp, fn, sim = pr[:, 0], pr[:, 1], pr[:, 2], pr[:, 3]
    with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 -> nan, as the devkit and port
        precision[:k] = tp / (tp + fp)
        recall[:k] = tp / (tp + fn)
        if with_aos:
            aos[:k] = sim / (tp + fp)
    # monotone envelope: value[k] = max(value[k:]) (a nan propagates, as np.max in the port)
    envelope = [np.maximum.accumulate(c[::-1])[::-1] for c in (precision, recall, aos)]
    return tuple(envelope)


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------
def evaluate(gt_annos: Sequence[KittiObjects], dt_annos: Sequence[KittiObjects],
             classes: Sequence[str] = params.CLASSES) -> EvalResult:
    """Evaluates detections against ground truth with the official KITTI semantics.

    Args:
        gt_annos: per frame, the label_2 objects (``KittiObjects`` with ``bbox [n, 4]``,
            ``hwl [n, 3]``, ``location [n, 3]`` bottom centres, ``rotation_y``, ``alpha``,
            ``truncated``, ``occluded``; DontCare rows included).
        dt_annos: per frame (same order and length), the detections; ``score [n]`` required.
        classes: a subset of ("Car", "Pedestrian", "Cyclist"), in report order.

    Returns:
        :class:`EvalResult` with R11/R40 AP for bbox/bev/3d/aos per class, difficulty and overlap
        set (AP 0 for a class without GT or without detections).
    """
    classes = tuple(classes)
    for cls in classes:
        if cls not in params.CLASSES:
            raise ValueError(f"classes: {cls!r} is not one of {params.CLASSES}")
    if len(set(classes)) != len(classes) or not classes:
        raise ValueError(f"classes: expected distinct class names, got {classes}")
    gt_annos, dt_annos = list(gt_annos), list(dt_annos)
    if len(gt_annos) != len(dt_annos):
        raise ValueError(f"gt_annos has {len(gt_annos)} frames but dt_annos has {len(dt_annos)}")
    for f, (gt, dt) in enumerate(zip(gt_annos, dt_annos)):
        _check_frame(gt, f"gt_annos[{f}]", need_score=False)
        _check_frame(dt, f"dt_annos[{f}]", need_score=True)

    used = set()
    for cls in classes:
        used.add(_TYPE_CODE[cls.lower()])
        if params.NEIGHBOUR[cls] is not None:
            used.add(_TYPE_CODE[params.NEIGHBOUR[cls].lower()])
    frames = _flatten(gt_annos, dt_annos, sorted(used))
    compute_aos = bool(len(frames.dt_alpha) > 0 and not np.any(frames.dt_alpha == params.NO_ALPHA))

    n_sets, n_metrics, n_cls = len(params.OVERLAP_SETS), len(params.METRICS), len(classes)
    n_diff, n_pts = len(params.DIFFICULTIES), params.NUM_SAMPLE_POINTS
    precision = np.zeros((n_sets, n_metrics, n_cls, n_diff, n_pts))
    recall = np.zeros_like(precision)
    orientation = np.zeros((n_sets, n_cls, n_diff, n_pts))
    num_gt = np.zeros((n_cls, n_diff), dtype=np.int64)
    for c, cls in enumerate(classes):
        for d in range(n_diff):
            ignored_gt, ignored_dt, n_gt = _labels(frames, cls, d)
            num_gt[c, d] = n_gt
            cache: Dict[Tuple[int, float], tuple] = {}
            for s, overlap_set in enumerate(params.OVERLAP_SETS):
                for m, metric in enumerate(params.METRICS):
                    theta = params.min_overlap(overlap_set, metric, cls)
                    key = (m, theta)
                    if key not in cache:
                        cache[key] = _curves(frames, m, theta, ignored_gt, ignored_dt, n_gt,
                                             with_aos=(m == 0 and compute_aos))
                    precision[s, m, c, d], recall[s, m, c, d], aos = cache[key]
                    if m == 0:
                        orientation[s, c, d] = aos
    return EvalResult(classes=classes, compute_aos=compute_aos, precision=precision, recall=recall,
                      orientation=orientation, num_gt=num_gt, num_frames=len(gt_annos))
