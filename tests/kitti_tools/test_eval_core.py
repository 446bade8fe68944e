"""Hand-made cases of the KITTI evaluator with AP values derived by hand from the devkit rules."""
import math

import numpy as np
import pytest

from pointdistiller.kitti_tools.evaluation import EvalResult, evaluate, score_thresholds
from pointdistiller.kitti_tools.io import KittiObjects

SIZES = {"Car": (1.5, 1.6, 3.9), "Van": (2.2, 1.9, 5.0), "Truck": (3.2, 2.6, 10.0),
         "Pedestrian": (1.7, 0.7, 0.8), "Person_sitting": (1.3, 0.6, 0.8),
         "Cyclist": (1.7, 0.6, 1.8), "Misc": (1.9, 1.5, 3.6), "Tram": (3.5, 2.5, 16.0)}


def obj(name, bbox, score=None, alpha=0.0, trunc=0.0, occ=0, loc=None, ry=0.0, hwl=None):
    """One object row. Without ``loc`` the 3D box is placed from the 2D box centre, so objects with
    the same 2D box have the same 3D box and boxes 200 px apart are 4 m apart. ``hwl`` defaults to
    a typical size of the class."""
    x1, y1, x2, y2 = bbox
    if loc is None:
        loc = ((x1 + x2) / 50.0, 1.6, 20.0 + (y1 + y2) / 100.0)
    if name == "DontCare":
        loc, hwl, ry, alpha, trunc, occ = (-1000.0,) * 3, (-1.0,) * 3, -10.0, -10.0, -1.0, -1
    elif hwl is None:
        hwl = SIZES[name]
    return dict(name=name, bbox=bbox, score=score, alpha=alpha, trunc=trunc, occ=occ, loc=loc,
                hwl=hwl, ry=ry)


def frame(*rows, det=False):
    if not rows:
        return KittiObjects.empty(with_score=det)
    return KittiObjects(
        name=np.array([r["name"] for r in rows], dtype=object),
        truncated=np.array([r["trunc"] for r in rows], dtype=np.float64),
        occluded=np.array([r["occ"] for r in rows], dtype=np.int64),
        alpha=np.array([r["alpha"] for r in rows], dtype=np.float64),
        bbox=np.array([r["bbox"] for r in rows], dtype=np.float64),
        hwl=np.array([r["hwl"] for r in rows], dtype=np.float64),
        location=np.array([r["loc"] for r in rows], dtype=np.float64),
        rotation_y=np.array([r["ry"] for r in rows], dtype=np.float64),
        score=np.array([r["score"] for r in rows], dtype=np.float64) if det else None)


def box(k, height=60.0, top=150.0):
    """The k-th 2D box of a row of well-separated 100 px wide boxes."""
    return (10.0 + 200.0 * (k % 6), top, 110.0 + 200.0 * (k % 6), top + height)


def ap(result, cls, metric, difficulty="easy", points=40, overlap_set="strict"):
    return result.ap(cls, metric, difficulty, overlap_set, points)


# ---------------------------------------------------------------------------------------------
# the recall-point cap: perfect detections of n_gt objects
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 5, 22, 39, 40, 41, 80])
@pytest.mark.parametrize("cls", ["Car", "Pedestrian", "Cyclist"])
def test_perfect_detections_hit_the_recall_point_cap(n, cls):
    gts = [frame(obj(cls, box(0))) for _ in range(n)]
    dts = [frame(obj(cls, box(0), score=1.0 - i / 1000.0), det=True) for i in range(n)]
    result = evaluate(gts, dts)
    # n <= 40: one threshold per GT, precision 1 at each -> slots 0..n-1 are 1
    r40 = 100.0 * (n - 1) / 40 if n <= 40 else 100.0
    r11 = 100.0 * math.ceil(n / 4) / 11 if n <= 40 else 100.0
    for metric in ("bbox", "bev", "3d", "aos"):
        for difficulty in ("easy", "moderate", "hard"):
            for overlap_set in ("strict", "loose"):
                assert ap(result, cls, metric, difficulty, 40, overlap_set) == pytest.approx(r40)
                assert ap(result, cls, metric, difficulty, 11, overlap_set) == pytest.approx(r11)
    assert result.num_gt[result.classes.index(cls)].tolist() == [n, n, n]
    assert ap(result, "Cyclist" if cls != "Cyclist" else "Car", "3d") == 0.0


def test_22_cyclists_give_52_5():
    gts = [frame(obj("Cyclist", box(0))) for _ in range(22)]
    dts = [frame(obj("Cyclist", box(0), score=0.5), det=True) for _ in range(22)]
    assert ap(evaluate(gts, dts), "Cyclist", "3d") == pytest.approx(52.5)


# ---------------------------------------------------------------------------------------------
# score thresholds and a PR curve built by hand
# ---------------------------------------------------------------------------------------------
def test_score_thresholds_by_hand():
    scores = np.array([0.5, 0.9, 0.7])
    np.testing.assert_array_equal(score_thresholds(scores, 4), [0.9, 0.7, 0.5])
    # n_gt = 80 perfect: threshold k sits at recall k/40 -> indices 0, 1, 3, 5, ..., 79
    v = 1.0 - np.arange(80) / 200.0
    expected = v[[0] + [2 * k - 1 for k in range(1, 41)]]
    np.testing.assert_array_equal(score_thresholds(v[::-1].copy(), 80), expected)
    assert len(score_thresholds(np.linspace(0, 1, 500), 1000)) <= 41
    assert len(score_thresholds(np.zeros(0), 0)) == 0


def test_pr_curve_with_interleaved_false_positives():
    # 4 GT cars; detections TP 0.9, FP 0.8, TP 0.7, FP 0.6, TP 0.5; the 4th GT is missed.
    gt = frame(*[obj("Car", box(k)) for k in range(4)])
    dt = frame(obj("Car", box(0), 0.9), obj("Car", box(4), 0.8), obj("Car", box(1), 0.7),
               obj("Car", box(5), 0.6), obj("Car", box(2), 0.5), det=True)
    result = evaluate([gt], [dt])
    # thresholds 0.9, 0.7, 0.5: precision 1, 2/3, 3/5
    for metric in ("bbox", "bev", "3d"):
        assert ap(result, "Car", metric, points=40) == pytest.approx((2 / 3 + 3 / 5) / 40 * 100)
        assert ap(result, "Car", metric, points=11) == pytest.approx(100 / 11)
    np.testing.assert_allclose(result.precision[0, 0, 0, 0, :4], [1, 2 / 3, 3 / 5, 0])
    np.testing.assert_allclose(result.recall[0, 0, 0, 0, :4], [3 / 4, 3 / 4, 3 / 4, 0])


def test_pr_curve_with_skipped_thresholds():
    # 80 GT in 80 frames, detected perfectly with scores s_i = 1 - i/200; after every odd-indexed
    # TP comes an FP with score s_i - 0.001 in an empty frame. At TP index i: TP = i + 1 and
    # FP = floor(i / 2). The thresholds are the TPs with indices 0, 1, 3, ..., 79.
    n = 80
    gts = [frame(obj("Car", box(0))) for _ in range(n)] + [frame() for _ in range(n // 2)]
    dts = [frame(obj("Car", box(0), 1.0 - i / 200.0), det=True) for i in range(n)]
    dts += [frame(obj("Car", box(1), 1.0 - i / 200.0 - 0.001), det=True) for i in range(1, n, 2)]
    result = evaluate(gts, dts)
    idx = [0] + [2 * k - 1 for k in range(1, 41)]
    precision = np.array([(i + 1) / (i + 1 + i // 2) for i in idx])
    envelope = np.array([precision[k:].max() for k in range(41)])
    assert ap(result, "Car", "3d", points=40) == pytest.approx(envelope[1:].sum() / 40 * 100)
    assert ap(result, "Car", "3d", points=11) == pytest.approx(envelope[::4].sum() / 11 * 100)


# ---------------------------------------------------------------------------------------------
# DontCare, neighbours, ignored detections
# ---------------------------------------------------------------------------------------------
def test_dontcare_absorbs_false_positives_for_the_2d_metric_only():
    # one GT car detected at 0.5; a car detection at 0.9 inside a DontCare region
    gt = frame(obj("Car", box(0)), obj("DontCare", (600.0, 100.0, 800.0, 300.0)))
    dt = frame(obj("Car", (620.0, 140.0, 720.0, 200.0), 0.9), obj("Car", box(0), 0.5), det=True)
    result = evaluate([gt], [dt])
    # one threshold (0.5); R11 = precision at slot 0 / 11
    assert ap(result, "Car", "bbox", points=11) == pytest.approx(100 / 11)
    assert ap(result, "Car", "bev", points=11) == pytest.approx(50 / 11)
    assert ap(result, "Car", "3d", points=11) == pytest.approx(50 / 11)
    # intersection over the *detection* area must exceed 0.7: 40 % inside is not enough
    gt = frame(obj("Car", box(0)), obj("DontCare", (660.0, 100.0, 800.0, 300.0)))
    dt = frame(obj("Car", (600.0, 140.0, 700.0, 200.0), 0.9), obj("Car", box(0), 0.5), det=True)
    assert ap(evaluate([gt], [dt]), "Car", "bbox", points=11) == pytest.approx(50 / 11)


@pytest.mark.parametrize("cls,other,absorbs", [
    ("Car", "Van", True), ("Car", "Truck", False), ("Car", "Misc", False),
    ("Pedestrian", "Person_sitting", True), ("Pedestrian", "Cyclist", False),
    ("Cyclist", "Pedestrian", False), ("Cyclist", "Person_sitting", False)])
def test_neighbour_classes_are_ignored_not_false_positives(cls, other, absorbs):
    # a cls detection at 0.9 on a GT of class `other`, and a true positive at 0.5
    gt = frame(obj(cls, box(0)), obj(other, box(3)))
    dt = frame(obj(cls, box(3), 0.9, hwl=SIZES[other]), obj(cls, box(0), 0.5), det=True)
    result = evaluate([gt], [dt])
    expected = 100 / 11 if absorbs else 50 / 11
    for metric in ("bbox", "bev", "3d"):
        assert ap(result, cls, metric, points=11) == pytest.approx(expected)


def test_detections_of_a_neighbour_class_are_invisible():
    gt = frame(obj("Car", box(0)))
    dt = frame(obj("Van", box(3), 0.9), obj("Car", box(0), 0.5), det=True)
    assert ap(evaluate([gt], [dt]), "Car", "bbox", points=11) == pytest.approx(100 / 11)


def test_small_detection_of_another_class_takes_away_a_true_positive():
    # GT A (45 px, valid easy) has a car detection at 0.5 and a 35 px pedestrian detection at 0.9
    # (2D IoU 0.78); GT B is detected at 0.8.
    a, b = (100.0, 100.0, 200.0, 145.0), (500.0, 100.0, 600.0, 160.0)
    gt = frame(obj("Car", a), obj("Car", b))
    dt = frame(obj("Pedestrian", (100.0, 105.0, 200.0, 140.0), 0.9), obj("Car", b, 0.8),
               obj("Car", a, 0.5), det=True)
    result = evaluate([gt], [dt])
    # easy: the pedestrian is height-ignored (< 40 px) and wins pass 1 on score -> one TP only,
    # thresholds [0.8], precision [1] -> R40 0
    assert ap(result, "Car", "bbox", "easy") == 0.0
    assert ap(result, "Car", "bbox", "easy", points=11) == pytest.approx(100 / 11)
    # moderate: 35 px >= 25 px, so the pedestrian is just another class -> thresholds [0.8, 0.5]
    assert ap(result, "Car", "bbox", "moderate") == pytest.approx(2.5)


def test_second_pass_prefers_a_valid_detection_over_an_ignored_one():
    # GT A (50 px) has a 38 px pedestrian detection (IoU 0.76, score 0.9: height-ignored at easy)
    # and a car detection (IoU 0.9, score 0.3). Pass 1 gives A the pedestrian (highest score), so
    # the TPs are B 0.8, C 0.6, D 0.2 of n_gt 4: thresholds 0.8, 0.6, 0.2. At 0.2 pass 2 first takes
    # the ignored pedestrian, then replaces it by the valid car: 4 TP, 0 FP, precision 1 everywhere.
    # (Keeping the pedestrian would leave the car an FP: precision 3/4, R40 4.375.)
    a = (100.0, 100.0, 200.0, 150.0)
    gt = frame(obj("Car", a), obj("Car", box(3)), obj("Car", box(4)), obj("Car", box(5)))
    dt = frame(obj("Pedestrian", (100.0, 103.0, 200.0, 141.0), 0.9),
               obj("Car", box(3), 0.8), obj("Car", box(4), 0.6),
               obj("Car", (100.0, 100.0, 190.0, 150.0), 0.3), obj("Car", box(5), 0.2), det=True)
    result = evaluate([gt], [dt])
    assert ap(result, "Car", "bbox", "easy") == pytest.approx(5.0)
    # moderate: the 38 px pedestrian is simply another class; 4 TPs -> R40 = 3/40
    assert ap(result, "Car", "bbox", "moderate") == pytest.approx(7.5)


# ---------------------------------------------------------------------------------------------
# difficulty limits and the strict overlap test
# ---------------------------------------------------------------------------------------------
def test_difficulty_limits():
    rows = [obj("Car", box(0, height=40.0)), obj("Car", box(1, height=40.01)),
            obj("Car", box(2, height=25.0)), obj("Car", box(3, height=60.0), trunc=0.15),
            obj("Car", box(4, height=60.0), trunc=0.16), obj("Car", box(5, height=60.0), occ=1),
            obj("Car", box(0, height=60.0, top=250.0), occ=2, trunc=0.5),
            obj("Car", box(1, height=60.0, top=250.0), occ=3),
            obj("Van", box(2, height=60.0, top=250.0))]
    result = evaluate([frame(*rows)], [frame(det=True)])
    # easy: 40.01 and trunc 0.15; moderate: + 40, trunc .16, occ 1; hard: + occ 2 / trunc .5
    assert result.num_gt[0].tolist() == [2, 5, 6]


def test_detection_height_limit_is_strict():
    # a 40 px detection is valid at easy, a 39.99 px one is ignored (not an FP)
    gt = frame(obj("Car", box(0, height=60.0)))
    for height, expected in ((40.0, 50 / 11), (39.99, 100 / 11)):
        dt = frame(obj("Car", box(3, height=height), 0.9), obj("Car", box(0, height=60.0), 0.5),
                   det=True)
        assert ap(evaluate([gt], [dt]), "Car", "bbox", "easy", points=11) == pytest.approx(expected)


def test_overlap_must_exceed_the_minimum():
    gt = frame(obj("Pedestrian", (100.0, 100.0, 200.0, 200.0), alpha=0.0))
    exact_half = frame(obj("Pedestrian", (100.0, 100.0, 200.0, 150.0), 0.9,
                           loc=(0.0, 1.6, 10.0)), det=True)
    above = frame(obj("Pedestrian", (100.0, 100.0, 200.0, 151.0), 0.9, loc=(0.0, 1.6, 10.0)),
                  det=True)
    assert ap(evaluate([gt], [exact_half]), "Pedestrian", "bbox", "moderate", points=11) == 0.0
    assert (ap(evaluate([gt], [above]), "Pedestrian", "bbox", "moderate", points=11)
            == pytest.approx(100 / 11))


# ---------------------------------------------------------------------------------------------
# AOS, empty input, classes without GT or detections
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("delta,factor", [(0.0, 1.0), (math.pi / 2, 0.5), (math.pi / 3, 0.75),
                                          (math.pi, 0.0)])
def test_aos_scales_precision_by_orientation_similarity(delta, factor):
    n = 41
    gts = [frame(obj("Car", box(0), alpha=0.3)) for _ in range(n)]
    dts = [frame(obj("Car", box(0), 0.5 + i / 100, alpha=0.3 + delta), det=True) for i in range(n)]
    result = evaluate(gts, dts)
    assert result.compute_aos
    assert ap(result, "Car", "bbox") == pytest.approx(100.0)
    assert ap(result, "Car", "aos") == pytest.approx(100.0 * factor, abs=1e-9)
    assert ap(result, "Car", "aos", overlap_set="loose", points=11) == pytest.approx(100.0 * factor,
                                                                                     abs=1e-9)


def test_no_aos_when_a_detection_has_alpha_minus_10():
    gts = [frame(obj("Car", box(0)))]
    dts = [frame(obj("Car", box(0), 0.9), obj("Pedestrian", box(3), 0.2, alpha=-10.0), det=True)]
    result = evaluate(gts, dts)
    assert not result.compute_aos
    assert ap(result, "Car", "aos") is None
    assert result.to_json_dict()["strict"]["Car"]["aos"] is None
    assert "aos" not in result.summary()


def test_empty_frames_and_empty_input():
    result = evaluate([frame(), frame()], [frame(det=True), frame(det=True)])
    assert not result.compute_aos and result.num_frames == 2
    assert result.num_gt.sum() == 0
    for metric in ("bbox", "bev", "3d"):
        assert ap(result, "Car", metric) == 0.0
    empty = evaluate([], [])
    assert empty.num_frames == 0 and ap(empty, "Cyclist", "3d", points=11) == 0.0
    # empty frames between others change nothing
    gts = [frame(obj("Car", box(0))) for _ in range(5)]
    dts = [frame(obj("Car", box(0), 0.5), det=True) for _ in range(5)]
    padded = evaluate(gts + [frame()] * 3, dts + [frame(det=True)] * 3)
    np.testing.assert_array_equal(padded.precision, evaluate(gts, dts).precision)


def test_class_without_detections_or_without_gt_gives_zero():
    gt = frame(*[obj("Pedestrian", box(k)) for k in range(3)])
    dt = frame(obj("Cyclist", box(4), 0.9), det=True)
    result = evaluate([gt], [dt])
    json = result.to_json_dict()
    for overlap_set in ("strict", "loose"):
        for cls in ("Pedestrian", "Cyclist", "Car"):
            for metric in ("bbox", "bev", "3d", "aos"):
                assert json[overlap_set][cls][metric] == {"R40": [0.0] * 3, "R11": [0.0] * 3}
    assert result.num_gt.tolist() == [[0, 0, 0], [3, 3, 3], [0, 0, 0]]


def test_frames_without_gt_count_false_positives():
    gts = [frame(*[obj("Car", box(k)) for k in range(3)]), frame()]
    dts = [frame(*[obj("Car", box(k), 0.5 + k / 10) for k in range(3)], det=True),
           frame(obj("Car", box(0), 0.95), det=True)]
    result = evaluate(gts, dts)
    # thresholds 0.7, 0.6, 0.5 -> precision 1/2, 2/3, 3/4 -> envelope 3/4 everywhere
    assert ap(result, "Car", "bbox", points=40) == pytest.approx(2 * 0.75 / 40 * 100)


# ---------------------------------------------------------------------------------------------
# classes subset, report shapes, input errors
# ---------------------------------------------------------------------------------------------
def test_classes_subset_and_report_shapes():
    gts = [frame(obj("Car", box(0)), obj("Cyclist", box(2)))]
    dts = [frame(obj("Car", box(0), 0.9), obj("Cyclist", box(2), 0.8), det=True)]
    result = evaluate(gts, dts, classes=("Cyclist",))
    assert isinstance(result, EvalResult) and result.classes == ("Cyclist",)
    json = result.to_json_dict()
    assert list(json) == ["strict", "loose"] and list(json["strict"]) == ["Cyclist"]
    assert list(json["loose"]["Cyclist"]) == ["bbox", "bev", "3d", "aos"]
    assert list(json["strict"]["Cyclist"]["bev"]) == ["R40", "R11"]
    lines = result.summary().splitlines()
    assert lines[0] == "Cyclist AP@0.50, 0.50, 0.50:"
    assert lines[5] == "Cyclist AP_R40@0.50, 0.50, 0.50:"
    assert lines[10] == "Cyclist AP@0.50, 0.25, 0.25:"
    assert lines[1] == "bbox AP:9.0909, 9.0909, 9.0909"
    assert lines[4] == "aos  AP:9.09, 9.09, 9.09"
    assert lines[7] == "bev  AP:0.0000, 0.0000, 0.0000" and lines[8].startswith("3d   AP:")
    assert len(lines) == 20 and result.summary().endswith("\n")
    assert result.ret_dict()["Cyclist_image/easy_R40"] == 0.0
    assert set(result.ret_dict()) == {f"Cyclist_{m}/{d}_R40" for m in ("3d", "bev", "image", "aos")
                                      for d in ("easy", "moderate", "hard")}


def test_bad_input_is_reported_clearly():
    gt, dt = frame(obj("Car", box(0))), frame(obj("Car", box(0), 0.5), det=True)
    with pytest.raises(ValueError, match="gt_annos has 1 frames but dt_annos has 2"):
        evaluate([gt], [dt, dt])
    with pytest.raises(ValueError, match=r"dt_annos\[0\].*scores"):
        evaluate([gt], [gt])
    with pytest.raises(ValueError, match="classes"):
        evaluate([gt], [dt], classes=("car",))
    with pytest.raises(TypeError, match=r"gt_annos\[0\]"):
        evaluate([{"name": []}], [dt])
    broken = frame(obj("Car", box(0)))
    broken.bbox = broken.bbox[:, :3]
    with pytest.raises(ValueError, match=r"gt_annos\[0\]\.bbox"):
        evaluate([broken], [dt])
    with pytest.raises(ValueError, match="points"):
        evaluate([gt], [dt]).ap("Car", "3d", points=20)
