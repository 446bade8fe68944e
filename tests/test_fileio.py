import os

import pytest

from pointdistiller.kitti_tools.fileio import atomic_open, atomic_write_text


def test_atomic_write_replaces(tmp_path):
    p = tmp_path / "a.txt"
    atomic_write_text(str(p), "one")
    atomic_write_text(str(p), "two")
    assert p.read_text() == "two"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_atomic_write_interrupted_keeps_old(tmp_path):
    p = tmp_path / "a.txt"
    atomic_write_text(str(p), "old")
    with pytest.raises(RuntimeError):
        with atomic_open(str(p)) as f:
            f.write("half")
            raise RuntimeError("interrupted")
    assert p.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_atomic_write_has_umask_permissions(tmp_path):
    p = tmp_path / "a.txt"
    atomic_write_text(str(p), "x")
    umask = os.umask(0)
    os.umask(umask)
    assert (p.stat().st_mode & 0o777) == (0o666 & ~umask)
