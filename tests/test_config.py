"""Config loading: one base level, --set overrides, unknown keys and wrong types as errors."""
import glob
import os
import textwrap

import pytest
import yaml

from pointdistiller.config import (Config, ConfigError, config_to_dict, load_config, load_raw,
                                   parse_override)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BASE = """
model:
  type: pointpillars
  pillar_channels: 64
  backbone_channels: [64, 128, 256]
  head:
    nms_pre: 100
    score_threshold: 0.1
"""


def _write(folder, name, text):
    path = os.path.join(str(folder), name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(textwrap.dedent(text))
    return path


@pytest.fixture
def pair(tmp_path):
    base = _write(tmp_path, "teacher.yaml", BASE)
    child = _write(tmp_path, "student.yaml", """
        base: teacher.yaml
        model:
          pillar_channels: 32
          head:
            nms_pre: 50
        """)
    return base, child


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "configs", "*", "*.yaml"))))
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config) and cfg.model["type"] in ("pointpillars", "second", "point_rcnn")


def test_base_merge_is_deep(pair):
    _, child = pair
    m = load_config(child).model
    assert m["pillar_channels"] == 32                          # child wins
    assert m["backbone_channels"] == (64, 128, 256)            # base kept (list -> typed tuple)
    assert (m["head"].nms_pre, m["head"].score_threshold) == (50, 0.1)  # nested mappings merge
    assert m["neck_channels"] == 128                           # constructor default filled in


def test_set_overrides_after_base(pair):
    _, child = pair
    m = load_config(child, ["model.pillar_channels=16", "model.head.nms_pre=7",
                            "model.backbone_channels=[8, 16, 32]", "model.head.cls_weight=1e-3"]).model
    assert m["pillar_channels"] == 16 and m["head"].nms_pre == 7
    assert m["backbone_channels"] == (8, 16, 32)
    assert m["head"].cls_weight == 1e-3


@pytest.mark.parametrize("text", ["model.pillar_channels", "=3", "model..x=1", "model.1a=2"])
def test_set_syntax_errors(text):
    with pytest.raises(ConfigError, match="--set"):
        parse_override(text)


def test_unknown_key_names_path_and_file(pair, tmp_path):
    base, child = pair
    with pytest.raises(ConfigError) as e:
        load_config(child, ["model.pilar_channels=3"])
    assert "'model.pilar_channels'" in str(e.value) and "--set model.pilar_channels=3" in str(e.value)

    bad = _write(tmp_path, "bad.yaml", "base: teacher.yaml\nmodel:\n  head:\n    nms_preee: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(bad)
    assert "'model.head.nms_preee'" in str(e.value) and str(e.value).startswith(bad)

    _write(tmp_path, "teacher.yaml", BASE + "  neck_chanels: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(child)
    assert "'model.neck_chanels'" in str(e.value) and str(e.value).startswith(base)


def test_unknown_top_level_section(tmp_path):
    path = _write(tmp_path, "x.yaml", BASE + "trian:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match="unknown key 'trian'"):
        load_config(path)


def test_two_base_levels_rejected(pair, tmp_path):
    grandchild = _write(tmp_path, "tiny.yaml", "base: student.yaml\nmodel:\n  pillar_channels: 8\n")
    with pytest.raises(ConfigError, match="at most one base level"):
        load_config(grandchild)


def test_missing_base_and_bad_yaml(tmp_path):
    path = _write(tmp_path, "a.yaml", "base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="nowhere.yaml not found"):
        load_config(path)
    path = _write(tmp_path, "b.yaml", "model:\n  type: [unclosed\n")
    with pytest.raises(ConfigError, match=r"b.yaml:\d+: invalid YAML"):
        load_config(path)
    path = _write(tmp_path, "c.yaml", "model:\n  type: second\n  type: pointpillars\n")
    with pytest.raises(ConfigError, match=r"c.yaml:3: duplicate key 'type'"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(os.path.join(str(tmp_path), "missing.yaml"))


@pytest.mark.parametrize("override, match", [
    ("model.pillar_channels=abc", "'model.pillar_channels' must be int"),
    ("model.pillar_channels=32.0", "'model.pillar_channels' must be int"),
    ("model.pillar_channels=true", "'model.pillar_channels' must be int"),
    ("model.voxel_size=[0.16, 0.16]", "'model.voxel_size' must have 3 values"),
    ("model.backbone_channels=[64, x, 256]", r"'model.backbone_channels\[1\]' must be int"),
    ("model.head.nms_pre=many", "'model.head.nms_pre' must be int"),
    ("model.head.anchor_sizes=3", "'model.head.anchor_sizes' must be"),
    ("model.head.in_channels=3", "unknown key 'model.head.in_channels'"),   # derived, not set
    ("model.head=3", "'model.head' must be a mapping"),
    ("model.type=PointPillars", "'model.type' must be one of"),
    ("model=[1, 2]", "'model' must be a mapping"),
    ("model.type=[1]", "'model.type' must be one of"),
])
def test_wrong_types_rejected(pair, override, match):
    _, child = pair
    with pytest.raises(ConfigError, match=match):
        load_config(child, [override])


def test_literal_choices(tmp_path):
    path = _write(tmp_path, "s.yaml", "model:\n  type: second\n  sparse_algo: Native\n")
    with pytest.raises(ConfigError, match="'model.sparse_algo' must be one of 'auto'"):
        load_config(path)
    assert load_config(path, ["model.sparse_algo=native"]).model["sparse_algo"] == "native"


def test_float_fields_accept_ints_and_exponents(pair):
    _, child = pair
    m = load_config(child, ["model.voxel_size=[1, 1, 4]", "model.head.focal_gamma=2"]).model
    assert m["voxel_size"] == (1.0, 1.0, 4.0) and isinstance(m["voxel_size"][0], float)


def test_where_names_the_source(pair):
    base, child = pair
    _, where = load_raw(child, ["model.head.nms_pre=3"])
    assert where("model.backbone_channels") == base
    assert where("model.pillar_channels") == child
    assert where("model.head.nms_pre") == "--set model.head.nms_pre=3"


def test_dict_round_trip(pair, tmp_path):
    _, child = pair
    cfg = load_config(child)
    path = _write(tmp_path, "dump.yaml", yaml.safe_dump(config_to_dict(cfg)))
    assert load_config(path) == cfg


KD_CONFIG = os.path.join(REPO, "configs", "demo", "pointpillars_student_4x_kd.yaml")


@pytest.mark.parametrize("override,key", [
    ("train.learnig_rate=0.1", "train.learnig_rate"),
    ("train.epochs=many", "train.epochs"),
    ("data.augment.flip_x_prob=often", "data.augment.flip_x_prob"),
    ("data.synthetic_framez=4", "data.synthetic_framez"),
    ("teacher.confg=x.yaml", "teacher.confg"),
    ("distill.teacher_mod=train", "distill.teacher_mod"),
    ("distill.local=[{featur: pfn}]", "distill.local[0].featur"),
    ("distill.local=[{feature: pfn, k: ten}]", "distill.local[0].k"),
])
def test_every_optional_section_names_the_wrong_key(override, key):
    """An error inside an optional section names the key and the --set, not the whole section."""
    with pytest.raises(ConfigError) as info:
        load_config(KD_CONFIG, [override])
    message = str(info.value)
    assert f"'{key}'" in message and f"--set {override}" in message, message
    assert "Optional" not in message and "got dict" not in message, message


def test_string_fields_keep_the_text_typed():
    zeros = "0" * 64
    cfg = load_config(KD_CONFIG, [f"teacher.sha256={zeros}", "teacher.config=1e5"])
    assert cfg.teacher.sha256 == zeros and cfg.teacher.config == "1e5"
    # numbers elsewhere stay numbers, and the resolved config holds plain ones
    lr = config_to_dict(cfg)["train"]["lr"]
    assert type(lr) is float and lr == 0.0003 and type(cfg.train.epochs) is int
