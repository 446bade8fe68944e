"""The fast evaluator against a slow pure-Python transcription of the metric (kitti_eval.md §2),
on seeded random frames and on the real sample frame 000008."""
import math
import os

import numpy as np
import pytest

from pointdistiller.kitti_tools.evaluation import evaluate
from pointdistiller.kitti_tools.io import KittiObjects, read_label

CLASSES = ("Car", "Pedestrian", "Cyclist")
NEIGHBOUR = {"Car": "van", "Pedestrian": "person_sitting", "Cyclist": None}
MIN_HEIGHT = (40, 25, 25)
MAX_OCCLUSION = (0, 1, 2)
MAX_TRUNCATION = (0.15, 0.3, 0.5)
OVERLAPS = {"strict": {"bbox": (0.7, 0.5, 0.5), "bev": (0.7, 0.5, 0.5), "3d": (0.7, 0.5, 0.5)},
            "loose": {"bbox": (0.7, 0.5, 0.5), "bev": (0.5, 0.25, 0.25), "3d": (0.5, 0.25, 0.25)}}


# ---------------------------------------------------------------------------------------------
# slow reference: overlaps
# ---------------------------------------------------------------------------------------------
def ref_iou_2d(a, b, criterion=-1):
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    return iw * ih / (area_a if criterion == 0 else area_a + area_b - iw * ih)


def ref_footprint(loc, hwl, ry):
    """Corners (x, z) in the doc's order (l/2,w/2), (l/2,-w/2), (-l/2,-w/2), (-l/2,w/2)."""
    h, w, l = hwl
    c, s = math.cos(ry), math.sin(ry)
    return [(c * u + s * v + loc[0], -s * u + c * v + loc[2])
            for u, v in ((l / 2, w / 2), (l / 2, -w / 2), (-l / 2, -w / 2), (-l / 2, w / 2))]


def ref_clip(subject, clipper):
    """Intersection polygon of two convex polygons of the same orientation (Sutherland-Hodgman)."""
    sign = 1.0 if _area(clipper) > 0 else -1.0
    out = list(subject)
    for k in range(len(clipper)):
        p0, p1 = clipper[k], clipper[(k + 1) % len(clipper)]

        def side(q):
            return sign * ((p1[0] - p0[0]) * (q[1] - p0[1]) - (p1[1] - p0[1]) * (q[0] - p0[0]))

        pts, out = out, []
        for i, cur in enumerate(pts):
            prev = pts[i - 1]
            if side(cur) >= 0:
                if side(prev) < 0:
                    out.append(_cut(prev, cur, side(prev), side(cur)))
                out.append(cur)
            elif side(prev) >= 0:
                out.append(_cut(prev, cur, side(prev), side(cur)))
    return out


def _cut(p, q, dp, dq):
    t = dp / (dp - dq)
    return (p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1]))


def _area(poly):
    return sum(poly[i][0] * poly[(i + 1) % len(poly)][1] - poly[(i + 1) % len(poly)][0] * poly[i][1]
               for i in range(len(poly))) / 2 if len(poly) >= 3 else 0.0


def ref_bev_inter(d, g):
    return abs(_area(ref_clip(ref_footprint(*d), ref_footprint(*g))))


def ref_iou_bev(d, g):
    inter = ref_bev_inter(d, g)
    if inter <= 0:
        return 0.0
    return inter / (d[1][1] * d[1][2] + g[1][1] * g[1][2] - inter)


def ref_iou_3d(d, g):
    inter = ref_bev_inter(d, g)
    (dl, dhwl, _), (gl, ghwl, _) = d, g
    dh = max(0.0, min(dl[1], gl[1]) - max(dl[1] - dhwl[0], gl[1] - ghwl[0]))
    vol = inter * dh
    if vol <= 0:
        return 0.0
    return vol / (dhwl[0] * dhwl[1] * dhwl[2] + ghwl[0] * ghwl[1] * ghwl[2] - vol)


# ---------------------------------------------------------------------------------------------
# slow reference: the metric
# ---------------------------------------------------------------------------------------------
def ref_labels(gt, dt, cls, d):
    ignored_gt, ignored_dt, dontcare = [], [], []
    for i in range(len(gt)):
        name = gt.name[i].lower()
        height = gt.bbox[i][3] - gt.bbox[i][1]
        hard = (gt.occluded[i] > MAX_OCCLUSION[d] or gt.truncated[i] > MAX_TRUNCATION[d]
                or height <= MIN_HEIGHT[d])
        if name == cls.lower() and not hard:
            ignored_gt.append(0)
        elif name == NEIGHBOUR[cls] or (name == cls.lower() and hard):
            ignored_gt.append(1)
        else:
            ignored_gt.append(-1)
        if name == "dontcare":
            dontcare.append(gt.bbox[i])
    for j in range(len(dt)):
        height = abs(dt.bbox[j][3] - dt.bbox[j][1])
        if height < MIN_HEIGHT[d]:
            ignored_dt.append(1)
        elif dt.name[j].lower() == cls.lower():
            ignored_dt.append(0)
        else:
            ignored_dt.append(-1)
    return ignored_gt, ignored_dt, dontcare


def ref_statistics(ov, gt, dt, ig_gt, ig_dt, dontcare, metric, theta, thresh, compute_fp):
    """One frame, ``computeStatistics``: returns (tp, fp, fn, similarity, tp_scores)."""
    assigned = [False] * len(dt)
    tp = fp = fn = 0
    similarity, scores = 0.0, []
    for i in range(len(gt)):
        if ig_gt[i] == -1:
            continue
        det_idx, valid, max_overlap, assigned_ignored = -1, None, 0.0, False
        for j in range(len(dt)):
            if ig_dt[j] == -1 or assigned[j] or (compute_fp and dt.score[j] < thresh):
                continue
            o = ov[j][i]
            if not compute_fp:
                if o > theta and (valid is None or dt.score[j] > valid):
                    det_idx, valid = j, dt.score[j]
            elif o > theta and (o > max_overlap or assigned_ignored) and ig_dt[j] == 0:
                det_idx, valid, max_overlap, assigned_ignored = j, 1, o, False
            elif o > theta and valid is None and ig_dt[j] == 1:
                det_idx, valid, assigned_ignored = j, 1, True
        if valid is None:
            if ig_gt[i] == 0:
                fn += 1
        elif ig_gt[i] == 1 or ig_dt[det_idx] == 1:
            assigned[det_idx] = True
        else:
            tp += 1
            scores.append(dt.score[det_idx])
            similarity += (1 + math.cos(gt.alpha[i] - dt.alpha[det_idx])) / 2
            assigned[det_idx] = True
    if compute_fp:
        candidates = [j for j in range(len(dt))
                      if ig_dt[j] == 0 and not assigned[j] and dt.score[j] >= thresh]
        fp = len(candidates)
        if metric == "bbox":
            for box in dontcare:
                for j in candidates:
                    if not assigned[j] and ref_iou_2d(dt.bbox[j], box, criterion=0) > theta:
                        assigned[j] = True
                        fp -= 1
    return tp, fp, fn, similarity, scores


def ref_thresholds(scores, n_gt):
    v = sorted(scores, reverse=True)
    out, current = [], 0.0
    for i, score in enumerate(v):
        l_recall = (i + 1) / n_gt
        r_recall = (i + 2) / n_gt if i < len(v) - 1 else l_recall
        if (r_recall - current) < (current - l_recall) and i < len(v) - 1:
            continue
        out.append(score)
        current += 1 / 40.0
    return out


def ref_envelope(values):
    out = []
    for k in range(41):
        tail = values[k:]
        out.append(math.nan if any(math.isnan(x) for x in tail) else max(tail))
    return out


def ref_evaluate(gts, dts):
    """``{(set, cls, metric, difficulty, points): AP}`` with metric in bbox/bev/3d/aos."""
    overlaps = {"bbox": [], "bev": [], "3d": []}
    for gt, dt in zip(gts, dts):
        boxes_gt = [(gt.location[i], gt.hwl[i], gt.rotation_y[i]) for i in range(len(gt))]
        boxes_dt = [(dt.location[j], dt.hwl[j], dt.rotation_y[j]) for j in range(len(dt))]
        overlaps["bbox"].append([[ref_iou_2d(dt.bbox[j], gt.bbox[i]) for i in range(len(gt))]
                                 for j in range(len(dt))])
        overlaps["bev"].append([[ref_iou_bev(boxes_dt[j], boxes_gt[i]) for i in range(len(gt))]
                                for j in range(len(dt))])
        overlaps["3d"].append([[ref_iou_3d(boxes_dt[j], boxes_gt[i]) for i in range(len(gt))]
                               for j in range(len(dt))])
    alphas = [a for dt in dts for a in dt.alpha]
    compute_aos = bool(alphas) and all(a != -10 for a in alphas)
    out = {}
    for c, cls in enumerate(CLASSES):
        for d, difficulty in enumerate(("easy", "moderate", "hard")):
            labels = [ref_labels(gt, dt, cls, d) for gt, dt in zip(gts, dts)]
            n_gt = sum(lab[0].count(0) for lab in labels)
            for overlap_set in ("strict", "loose"):
                for metric in ("bbox", "bev", "3d"):
                    theta = OVERLAPS[overlap_set][metric][c]
                    scores = []
                    for f, (gt, dt) in enumerate(zip(gts, dts)):
                        scores += ref_statistics(overlaps[metric][f], gt, dt, *labels[f], metric,
                                                 theta, 0.0, False)[4]
                    thresholds = ref_thresholds(scores, n_gt) if n_gt else []
                    precision, aos = [0.0] * 41, [0.0] * 41
                    for k, t in enumerate(thresholds):
                        tp = fp = 0
                        sim = 0.0
                        for f, (gt, dt) in enumerate(zip(gts, dts)):
                            a, b, _, s, _ = ref_statistics(overlaps[metric][f], gt, dt, *labels[f],
                                                           metric, theta, t, True)
                            tp, fp, sim = tp + a, fp + b, sim + s
                        precision[k] = tp / (tp + fp) if tp + fp else math.nan
                        aos[k] = sim / (tp + fp) if tp + fp else math.nan
                    curves = {metric: ref_envelope(precision)}
                    if metric == "bbox" and compute_aos:
                        curves["aos"] = ref_envelope(aos)
                    for name, curve in curves.items():
                        out[(overlap_set, cls, name, difficulty, 40)] = sum(curve[1:]) / 40 * 100
                        out[(overlap_set, cls, name, difficulty, 11)] = sum(curve[::4]) / 11 * 100
    return out


def assert_matches_reference(gts, dts):
    expected = ref_evaluate(gts, dts)
    result = evaluate(gts, dts)
    for (overlap_set, cls, metric, difficulty, points), value in expected.items():
        got = result.ap(cls, metric, difficulty, overlap_set, points)
        assert got == pytest.approx(value, abs=1e-6, nan_ok=True), \
            (overlap_set, cls, metric, difficulty, points)
    assert result.compute_aos == any(k[2] == "aos" for k in expected)
    return result, expected


# ---------------------------------------------------------------------------------------------
# random frames
# ---------------------------------------------------------------------------------------------
GT_TYPES = ["Car"] * 6 + ["Pedestrian"] * 3 + ["Cyclist"] * 2 + [
    "Van", "Person_sitting", "Truck", "Misc", "DontCare", "DontCare"]
SIZE = {"Car": (1.5, 1.6, 3.9), "Van": (2.2, 1.9, 5.0), "Truck": (3.2, 2.6, 9.0),
        "Pedestrian": (1.7, 0.7, 0.8), "Person_sitting": (1.3, 0.6, 0.8),
        "Cyclist": (1.7, 0.6, 1.8), "Misc": (1.8, 1.5, 3.0)}


def _objects(rows, det):
    if not rows:
        return KittiObjects.empty(with_score=det)
    cols = list(zip(*rows))
    return KittiObjects(
        name=np.array(cols[0], dtype=object), truncated=np.array(cols[1], dtype=np.float64),
        occluded=np.array(cols[2], dtype=np.int64), alpha=np.array(cols[3], dtype=np.float64),
        bbox=np.array(cols[4], dtype=np.float64), hwl=np.array(cols[5], dtype=np.float64),
        location=np.array(cols[6], dtype=np.float64), rotation_y=np.array(cols[7], dtype=np.float64),
        score=np.array(cols[8], dtype=np.float64) if det else None)


def random_frames(n_frames, seed):
    """Frames with ~0-10 GT (all types, DontCare, occlusion/truncation/heights around the limits)
    and ~0-20 detections: noisy copies (some with a neighbour or wrong class, tied scores), false
    positives (some inside DontCare regions), small detections."""
    rng = np.random.default_rng(seed)
    gts, dts = [], []
    for f in range(n_frames):
        gt_rows, dt_rows = [], []
        ties = f % 3 == 0  # scores rounded to 1 decimal: many equal scores
        for _ in range(rng.integers(0, 11)):
            name = GT_TYPES[rng.integers(len(GT_TYPES))]
            x1, y1 = rng.uniform(0, 1100), rng.uniform(100, 250)
            bbox = [x1, y1, x1 + rng.uniform(15, 120), y1 + rng.choice([rng.uniform(15, 120), 25.0,
                                                                          40.0, 41.0])]
            if name == "DontCare":
                gt_rows.append((name, -1.0, -1, -10.0, bbox, (-1.0, -1.0, -1.0),
                                (-1000.0, -1000.0, -1000.0), -10.0, None))
                if rng.random() < 0.6:  # a false positive inside the region
                    inner = [bbox[0] + 1, bbox[1] + 1, bbox[2] - 1, bbox[3] - 1]
                    dt_rows.append((CLASSES[rng.integers(3)], -1.0, -1, 0.0, inner, SIZE["Car"],
                                    (rng.uniform(-15, 15), 1.6, rng.uniform(5, 45)), 0.0,
                                    rng.uniform(0, 1)))
                continue
            hwl = tuple(np.array(SIZE[name]) * rng.uniform(0.9, 1.1, 3))
            loc = (rng.uniform(-15, 15), rng.uniform(1.4, 1.8), rng.uniform(5, 45))
            ry = rng.uniform(-math.pi, math.pi)
            trunc = float(rng.choice([0.0, 0.0, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6]))
            occ = int(rng.choice([0, 0, 1, 2, 3]))
            alpha = rng.uniform(-math.pi, math.pi)
            gt_rows.append((name, trunc, occ, alpha, bbox, hwl, loc, ry, None))
            for _ in range(rng.choice([0, 1, 1, 1, 2])):  # detections of this object
                det_name = name if name in CLASSES else ("Car" if name in ("Van", "Truck") else
                                                         "Pedestrian")
                if rng.random() < 0.1:
                    det_name = ["Car", "Pedestrian", "Cyclist", "Van"][rng.integers(4)]
                noise = rng.uniform(0.0, 0.25)
                w, h = bbox[2] - bbox[0], bbox[3] - bbox[1]
                dbox = [bbox[0] + rng.normal(0, noise * w / 4), bbox[1] + rng.normal(0, noise * h / 4),
                        bbox[2] + rng.normal(0, noise * w / 4), bbox[3] + rng.normal(0, noise * h / 4)]
                if rng.random() < 0.15:  # exactly at a height limit
                    dbox[3] = dbox[1] + float(rng.choice([25.0, 40.0]))
                dloc = tuple(np.array(loc) + rng.normal(0, noise, 3) * [1.0, 0.3, 1.0])
                dhwl = tuple(np.array(hwl) * rng.normal(1.0, noise / 3, 3))
                score = rng.uniform(0, 1)
                dt_rows.append((det_name, -1.0, -1, alpha + rng.normal(0, 0.3), dbox, dhwl, dloc,
                                ry + rng.normal(0, noise), round(score, 1) if ties else score))
        for _ in range(rng.integers(0, 6)):  # false positives anywhere, some small
            x1, y1 = rng.uniform(0, 1100), rng.uniform(100, 250)
            name = ["Car", "Pedestrian", "Cyclist", "Van", "Truck"][rng.integers(5)]
            score = rng.uniform(0, 1)
            dt_rows.append((name, -1.0, -1, rng.uniform(-3, 3),
                            [x1, y1, x1 + rng.uniform(10, 100), y1 + rng.uniform(10, 100)],
                            SIZE["Car" if name in ("Van", "Truck") else name],
                            (rng.uniform(-15, 15), 1.6, rng.uniform(5, 45)), rng.uniform(-3, 3),
                            round(score, 1) if ties else score))
        order = rng.permutation(len(dt_rows))
        gts.append(_objects(gt_rows, det=False))
        dts.append(_objects([dt_rows[k] for k in order], det=True))
    return gts, dts


def test_random_frames_match_the_reference():
    gts, dts = random_frames(50, seed=1)
    result, expected = assert_matches_reference(gts, dts)
    # the data exercise the interesting paths: many valid cars, some positive and imperfect APs
    assert result.num_gt[0, 2] >= 40
    assert 0 < expected[("strict", "Car", "bbox", "moderate", 40)] < 100
    assert 0 < expected[("loose", "Pedestrian", "3d", "hard", 11)] < 100


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_more_random_frames_match_the_reference(seed):
    gts, dts = random_frames(60, seed=seed)
    assert_matches_reference(gts, dts)


def test_random_frames_without_aos_match_the_reference():
    gts, dts = random_frames(20, seed=5)
    next(dt for dt in dts if len(dt)).alpha[-1] = -10.0
    result, _ = assert_matches_reference(gts, dts)
    assert not result.compute_aos


# ---------------------------------------------------------------------------------------------
# the real sample frame
# ---------------------------------------------------------------------------------------------
def test_sample_frame_000008(kitti_sample):
    gt = read_label(os.path.join(kitti_sample, "training", "label_2", "000008.txt"), kind="label")
    dt = read_label(os.path.join(kitti_sample, "example_detections", "000008.txt"), kind="result")
    result, _ = assert_matches_reference([gt], [dt])
    # By hand (moderate): valid GT are cars 2, 4, 5, 6 (1 and 3 have occlusion 3); the detections
    # at 11.17, 10.13, 8.11, 6.87 match cars 4, 2, 6, 5 with 2D IoU > 0.7, the ones at 7.52 and
    # 5.00 fall on the ignored cars 3 and 1, and no false positive scores above 6.87: 4 thresholds,
    # precision 1 -> R40 3/40 = 7.5, R11 1/11. Easy has only car 6 valid: R40 0.
    assert result.num_gt.tolist() == [[1, 4, 4], [0, 0, 0], [0, 0, 0]]
    car = result.to_json_dict()["strict"]["Car"]
    assert car["bbox"]["R40"] == pytest.approx([0.0, 7.5, 7.5])
    assert car["bbox"]["R11"] == pytest.approx([100 / 11] * 3)
    assert car["bev"]["R40"] == pytest.approx([0.0, 4.375, 4.375])
    assert car["bev"]["R11"] == pytest.approx([0.0, 100 / 11, 100 / 11])
    assert car["3d"]["R40"] == pytest.approx([0.0, 4.0, 4.0])
    assert car["3d"]["R11"] == pytest.approx([0.0, 100 / 11, 100 / 11])
    assert car["aos"]["R40"] == pytest.approx([0.0, 7.498385767458238, 7.498385767458238])
    loose = result.to_json_dict()["loose"]["Car"]
    assert loose["bev"]["R40"] == pytest.approx([0.0, 7.5, 7.5])
    assert loose["3d"]["R40"] == pytest.approx([0.0, 7.5, 7.5])
    assert result.summary().splitlines()[:10] == [
        "Car AP@0.70, 0.70, 0.70:",
        "bbox AP:9.0909, 9.0909, 9.0909",
        "bev  AP:0.0000, 9.0909, 9.0909",
        "3d   AP:0.0000, 9.0909, 9.0909",
        "aos  AP:9.09, 9.09, 9.09",
        "Car AP_R40@0.70, 0.70, 0.70:",
        "bbox AP:0.0000, 7.5000, 7.5000",
        "bev  AP:0.0000, 4.3750, 4.3750",
        "3d   AP:0.0000, 4.0000, 4.0000",
        "aos  AP:0.00, 7.50, 7.50"]
