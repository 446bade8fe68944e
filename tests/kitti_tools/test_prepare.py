"""`kitti-tools prepare` on a copy of the real sample: info files, GT database, reruns, bad input.

The sample has full scans in ``velodyne/`` for 000000-000002 and only ``velodyne_reduced/`` for
000008; prepare falls back per frame from ``velodyne`` to ``velodyne_reduced`` (recorded in the
info), which these tests rely on.
"""
import argparse
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from pointdistiller.kitti_tools import cli
from pointdistiller.kitti_tools import io as kio
from pointdistiller.kitti_tools import prepare_cli
from pointdistiller.kitti_tools.errors import KittiFormatError
from pointdistiller.kitti_tools.geometry import fov_mask, points_in_boxes
from pointdistiller.kitti_tools.prepare import kitti_difficulty, prepare_kitti

SPLITS = ["train", "val", "trainval"]


def _copy_sample(src, dst):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("standard_split", "example_detections", "README.md"))
    for folder, _, files in os.walk(dst):
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o644)
    return str(dst)


def _snapshot(folder):
    """Every file under ``folder`` (output files only) with its inode, mtime and bytes."""
    out = {}
    for base, _, files in os.walk(folder):
        rel_base = os.path.relpath(base, folder)
        if rel_base.split(os.sep)[0] in ("training", "testing", "ImageSets"):
            continue
        for name in files:
            path = os.path.join(base, name)
            st = os.stat(path)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = (st.st_ino, st.st_mtime_ns, f.read())
    return out


def _prepare(root, **kwargs):
    kwargs.setdefault("splits", SPLITS)
    kwargs.setdefault("workers", 1)
    kwargs.setdefault("progress", False)
    messages = []
    written = prepare_kitti(root, log=messages.append, **kwargs)
    return written, messages


def _load(path):
    with open(path) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def prepared(kitti_sample, tmp_path_factory):
    root = _copy_sample(kitti_sample, tmp_path_factory.mktemp("kitti") / "kitti")
    written, messages = _prepare(root)
    return root, written, messages


@pytest.fixture
def sample_copy(kitti_sample, tmp_path):
    return _copy_sample(kitti_sample, tmp_path / "kitti")


def test_outputs_and_skipped_splits(prepared):
    root, written, messages = prepared
    assert set(written) == {"train", "val", "trainval", "dbinfos"}
    assert written["dbinfos"] == os.path.join(root, "kitti_dbinfos_train.json")
    _, skipped = _prepare(root, splits=["train", "test", "nosuch"])
    assert any("skipping split 'test'" in m for m in skipped)
    assert any("skipping split 'nosuch'" in m for m in skipped)


def test_infos_content(prepared):
    root, written, _ = prepared
    infos = {s: _load(written[s]) for s in SPLITS}
    assert [f["frame_id"] for f in infos["trainval"]["frames"]] == ["000000", "000001", "000002", "000008"]
    assert [f["frame_id"] for f in infos["val"]["frames"]] == ["000001", "000002", "000008"]
    assert infos["trainval"]["frames"][1] == infos["val"]["frames"][0]
    for info in infos["trainval"]["frames"]:
        frame = info["frame_id"]
        assert info["velodyne_reduced"] == (frame == "000008")
        assert info["velodyne_path"] == os.path.join(
            "training", "velodyne_reduced" if frame == "000008" else "velodyne", f"{frame}.bin")
        assert info["image_shape"] == list(kio.read_image_size(os.path.join(root, info["image_path"])))
        calib = kio.read_calib(os.path.join(root, info["calib_path"]))
        np.testing.assert_array_equal(np.asarray(info["calib"]["P2"]), calib.P2)
        np.testing.assert_array_equal(np.asarray(info["calib"]["Tr_velo_to_cam"]), calib.Tr_velo_to_cam)
        labels = kio.read_label(os.path.join(root, info["label_path"]))
        annos = info["annos"]
        assert annos["name"] == list(labels.name)
        np.testing.assert_array_equal(annos["bbox"], labels.bbox)
        points = kio.read_velodyne(os.path.join(root, info["velodyne_path"]))
        fov = points[fov_mask(points, calib, info["image_shape"])]
        assert info["num_points"] == len(points) and info["num_points_fov"] == len(fov)
        care = labels.name != "DontCare"
        boxes = np.asarray(annos["gt_boxes_lidar"])
        counts = points_in_boxes(fov, boxes[care]).sum(axis=0)
        np.testing.assert_array_equal(np.asarray(annos["num_points_in_gt"])[care], counts)
        assert (np.asarray(annos["num_points_in_gt"])[~care] == -1).all()
        assert (np.asarray(annos["difficulty"])[~care] == -1).all()
        assert (boxes[~care] == 0).all()
    f8 = infos["val"]["frames"][2]["annos"]
    # 000008: car 0 is truncated 0.88 (no level), car 2 occluded 3 (no level), car 1 occluded 1
    assert f8["difficulty"][:6] == [-1, 1, -1, 1, 1, 0]  # car 4 is 39.6 px high: moderate


def test_gt_database(prepared):
    root, written, _ = prepared
    db = _load(written["dbinfos"])
    assert sorted(db["classes"]) == ["Pedestrian"]  # the train split is frame 000000
    (entry,) = db["classes"]["Pedestrian"]
    assert entry["path"] == "gt_database/000000_Pedestrian_0.bin"
    assert entry["frame_id"] == "000000" and entry["gt_index"] == 0 and entry["difficulty"] == 0
    pts = kio.read_velodyne(os.path.join(root, entry["path"]))
    assert len(pts) == entry["num_points"] > 100
    box = np.asarray(entry["box"])
    assert np.abs(pts[:, :3]).max() < 1.0  # relative to the box centre
    pts[:, :3] += box[:3].astype(np.float32)
    assert points_in_boxes(pts, (box * [1, 1, 1, 1.001, 1.001, 1.001, 1])[None]).all()
    info = _load(written["train"])["frames"][0]
    assert info["annos"]["num_points_in_gt"][0] == entry["num_points"]


def test_database_of_all_frames_and_workers(prepared, tmp_path):
    root, _, _ = prepared
    written, _ = _prepare(root, out=str(tmp_path / "out"), db_split="trainval", workers=2)
    db = _load(written["dbinfos"])
    counts = {c: len(v) for c, v in db["classes"].items()}
    assert counts == {"Car": 8, "Cyclist": 1, "Misc": 1, "Pedestrian": 1, "Truck": 1}
    names = sorted(os.listdir(tmp_path / "out" / "gt_database"))
    assert names == sorted(os.path.basename(e["path"]) for v in db["classes"].values() for e in v)
    assert "000008_Car_5.bin" in names and "000001_Car_1.bin" in names
    # same infos as the single-process run in the data root
    for split in SPLITS:
        assert _load(written[split]) == _load(os.path.join(root, f"kitti_infos_{split}.json"))


def test_rerun_is_idempotent_and_incremental(sample_copy):
    root = sample_copy
    _prepare(root)
    before = _snapshot(root)
    _, messages = _prepare(root)
    assert _snapshot(root) == before
    assert sum("up to date" in m for m in messages) == 3
    # a changed label of a val frame rewrites val and trainval only
    label = os.path.join(root, "training", "label_2", "000002.txt")
    with open(label, "a") as f:
        f.write("Cyclist 0.00 0 0.00 100.00 150.00 130.00 250.00 1.70 0.60 1.80 -3.00 1.60 12.00 0.00\n")
    _prepare(root)
    after = _snapshot(root)
    changed = {k for k in after if after[k] != before.get(k)}
    assert changed == {"kitti_infos_val.json", "kitti_infos_trainval.json"}
    assert _load(os.path.join(root, "kitti_infos_val.json"))["frames"][1]["annos"]["name"][-1] == "Cyclist"
    # a changed train frame rebuilds the database
    os.utime(os.path.join(root, "training", "calib", "000000.txt"), ns=(1, 1))
    _prepare(root)
    final = _snapshot(root)
    assert final["kitti_dbinfos_train.json"] != after["kitti_dbinfos_train.json"]
    assert final["kitti_infos_train.json"] != after["kitti_infos_train.json"]
    # a removed database file is rebuilt
    os.unlink(os.path.join(root, "gt_database", "000000_Pedestrian_0.bin"))
    _prepare(root)
    assert os.path.isfile(os.path.join(root, "gt_database", "000000_Pedestrian_0.bin"))


def _corrupt_label(root):
    path = os.path.join(root, "training", "label_2", "000008.txt")
    with open(path) as f:
        lines = f.read().splitlines()
    lines[3] = lines[3].replace("Car", "Bus", 1)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return r"label_2/000008.txt:4: unknown object type 'Bus'"


def _bad_size(root):
    path = os.path.join(root, "training", "label_2", "000001.txt")
    with open(path) as f:
        lines = f.read().splitlines()
    fields = lines[1].split()
    fields[8] = "-1.87"
    lines[1] = " ".join(fields)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return r"label_2/000001.txt:2: object size \(h, w, l\) must be positive"


def _field_count(root):
    path = os.path.join(root, "training", "label_2", "000002.txt")
    with open(path, "a") as f:
        f.write("\nCar 0.00 0 1.0 1 2 3 4 1.5 1.6 3.9 1 1\n")
    return r"label_2/000002.txt:4: expected 15 fields, found 13"


def _truncated_bin(root):
    path = os.path.join(root, "training", "velodyne", "000001.bin")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 6)
    return r"velodyne/000001.bin: file size \d+ bytes is not a multiple of 16"


def _nan_bin(root):
    path = os.path.join(root, "training", "velodyne", "000000.bin")
    pts = kio.read_velodyne(path)
    pts[7, 2] = np.nan
    pts.tofile(path)
    return r"velodyne/000000.bin: 1 of 115384 points hold NaN or inf values \(first at point 7\)"


def _missing_calib(root):
    os.unlink(os.path.join(root, "training", "calib", "000002.txt"))
    return r"calib/000002.txt: calib file not found"


def _missing_label(root):
    os.unlink(os.path.join(root, "training", "label_2", "000000.txt"))
    return r"label_2/000000.txt: label file not found"


def _missing_velodyne(root):
    os.unlink(os.path.join(root, "training", "velodyne_reduced", "000008.bin"))
    return r"velodyne/000008.bin: velodyne file not found \(nor velodyne_reduced/000008.bin\)"


def _bad_id(root):
    with open(os.path.join(root, "ImageSets", "val.txt"), "a") as f:
        f.write("../000001\n")
    return r"ImageSets/val.txt:4: bad frame id '../000001'"


@pytest.mark.parametrize("corrupt", [_corrupt_label, _bad_size, _field_count, _truncated_bin,
                                     _nan_bin, _missing_calib, _missing_label, _missing_velodyne,
                                     _bad_id])
def test_bad_input_leaves_output_unchanged(sample_copy, corrupt):
    root = sample_copy
    _prepare(root)
    before = _snapshot(root)
    expected = corrupt(root)
    with pytest.raises(KittiFormatError, match=expected):
        _prepare(root, db_split="train")
    assert _snapshot(root) == before
    assert not [n for n in os.listdir(root) if n.startswith(".")]  # no staging or temp leftovers


def test_bad_input_on_first_run_writes_nothing(sample_copy):
    _missing_calib(sample_copy)
    with pytest.raises(KittiFormatError, match="calib/000002.txt"):
        _prepare(sample_copy, workers=2)
    assert _snapshot(sample_copy) == {}
    assert not [n for n in os.listdir(sample_copy) if n.startswith(".")]


def test_velodyne_reduced_folder(sample_copy):
    with pytest.raises(KittiFormatError, match=r"velodyne_reduced/000000.bin: velodyne file not found"):
        _prepare(sample_copy, velodyne="velodyne_reduced")
    with open(os.path.join(sample_copy, "ImageSets", "only8.txt"), "w") as f:
        f.write("000008\n")
    written, _ = _prepare(sample_copy, splits=["only8"], velodyne="velodyne_reduced")
    info = _load(written["only8"])
    assert info["velodyne"] == "velodyne_reduced" and "dbinfos" not in written
    assert info["frames"][0]["num_points_fov"] == info["frames"][0]["num_points"] == 17238


def test_test_split_from_testing_folder(sample_copy):
    root = sample_copy
    for folder, ext in (("velodyne", "bin"), ("calib", "txt"), ("image_2", "png")):
        os.makedirs(os.path.join(root, "testing", folder))
        shutil.copy(os.path.join(root, "training", folder, f"000001.{ext}"),
                    os.path.join(root, "testing", folder, f"000042.{ext}"))
    with open(os.path.join(root, "ImageSets", "test.txt"), "w") as f:
        f.write("000042\n")
    written, _ = _prepare(root, splits=["test"])
    (frame,) = _load(written["test"])["frames"]
    assert frame["frame_id"] == "000042" and frame["velodyne_path"] == "testing/velodyne/000042.bin"
    assert "annos" not in frame and "label_path" not in frame
    assert set(written) == {"test"}


def test_cli(sample_copy, tmp_path):
    parser = argparse.ArgumentParser()
    prepare_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["prepare", "--root", sample_copy, "--out", str(tmp_path / "o"),
                              "--splits", "train", "val", "--workers", "1", "--no-progress"])
    assert args.func(args) == 0
    assert sorted(os.listdir(tmp_path / "o")) == [
        "gt_database", "kitti_dbinfos_train.json", "kitti_infos_train.json", "kitti_infos_val.json"]


def test_cli_errors_are_one_line_and_exit_2(sample_copy, tmp_path, capsys):
    assert cli.main(["prepare", "--root", sample_copy, "--splits", "nosuch", "--no-progress"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "no split to prepare" in err
    (tmp_path / "file").write_text("x")
    assert cli.main(["prepare", "--root", sample_copy, "--out", str(tmp_path / "file" / "o"),
                     "--no-progress"]) == 2
    assert "--out" in capsys.readouterr().err
    shutil.rmtree(os.path.join(sample_copy, "ImageSets"))
    assert cli.main(["prepare", "--root", sample_copy, "--no-progress"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "ImageSets not found" in err


def test_read_only_outputs(sample_copy, small_fs, capsys):
    ro = small_fs(64, readonly=True)
    assert cli.main(["prepare", "--root", sample_copy, "--out", ro, "--no-progress"]) == 2
    assert "read-only" in capsys.readouterr().err
    # the root itself as the output, on a file system mounted read-only after the copy
    fs = small_fs(32 * 1024)
    root = _copy_sample(sample_copy, os.path.join(fs, "kitti"))
    proc = subprocess.run(["mount", "-o", "remount,ro", fs], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot remount read-only: {proc.stderr.strip()}")
    assert cli.main(["prepare", "--root", root, "--no-progress"]) == 2
    assert "KITTI root (the output folder)" in capsys.readouterr().err


def test_stale_staging_folders_are_removed(sample_copy):
    stale = os.path.join(sample_copy, ".gt_database.staging-abc123")
    os.makedirs(os.path.join(stale, "x"))
    _prepare(sample_copy, splits=["train"])
    assert not os.path.exists(stale)


def test_kitti_difficulty():
    bbox = np.array([[0, 0, 10, 45], [0, 0, 10, 40], [0, 0, 10, 39.9], [0, 0, 10, 30],
                     [0, 0, 10, 30], [0, 0, 10, 24.9], [0, 0, 10, 100], [0, 0, 10, 100]])
    occluded = np.array([0, 0, 0, 1, 2, 0, 3, 0])
    truncated = np.array([0.15, 0.0, 0.0, 0.3, 0.5, 0.0, 0.0, 0.51])
    np.testing.assert_array_equal(kitti_difficulty(bbox, occluded, truncated),
                                  [0, 0, 1, 1, 2, -1, -1, -1])
