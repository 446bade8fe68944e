"""Helpers of the trainer tests (imported by their conftest and test modules): tiny PointPillars
and PointRCNN configs and one function that runs a training."""
import os

from pointdistiller.config import load_config
from pointdistiller.engine.trainer import Trainer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PAPER_PP = os.path.join(REPO, "configs", "pointpillars", "teacher.yaml")
PAPER_RCNN = os.path.join(REPO, "configs", "point_rcnn", "teacher.yaml")

# A tiny PointPillars on a 25.6 x 25.6 m field with 0.4 m pillars (64 x 64 grid), narrow widths.
MODEL = """base: {base}
model:
  point_range: [0.0, -12.8, -3.0, 25.6, 12.8, 1.0]
  voxel_size: [0.4, 0.4, 4.0]
  max_voxels: [3000, 3000]
  max_points_per_voxel: 16
  pillar_channels: {p}
  backbone_channels: [{p}, {b}, {b}]
  neck_channels: {p}
train: {{batch_size: 2, workers: 0, epochs: 2, repeat: 1, log_interval: 1, lr: 0.002, amp: false}}
"""
KD = """teacher: {{config: teacher.yaml}}
distill:
  local: [{{feature: pfn, num_nodes: 256, k: 8}}]
"""


# A tiny PointRCNN on the same field: 1024 points per frame, fewer centres, proposals and RoIs,
# MLP widths scaled by {w} (1 = the paper teacher's first level).
RCNN = """base: {base}
model:
  point_range: [0.0, -12.8, -3.0, 25.6, 12.8, 1.0]
  num_points: [1024, 1024]
  sa_num_points: [256, 64, 32, 16]
  sa_mlps:
    - [[{a}, {a}, {b}], [{a}, {a}, {b}]]
    - [[{b}, {b}, {b}], [{b}, {b}, {b}]]
    - [[{b}, {b}, {b}], [{b}, {b}, {b}]]
    - [[{b}, {b}, {b}], [{b}, {b}, {b}]]
  fp_channels: [[{fp1}, {b}, {b}], [{fp2}, {b}, {b}], [{fp2}, {b}, {b}], [{fp4}, {b}, {b}]]
  rpn: {{cls_channels: [{b}], reg_channels: [{b}], nms_pre: 512, nms_post_train: 32, nms_post_test: 16}}
  roi: {{num_sampled_points: 64, rois_per_sample: 16, xyz_up_channels: [{b}], merge_channels: {b},
         sa_mlps: [[{b}, {b}], [{b}, {b}], [{b}, {b}]], cls_channels: [{b}], reg_channels: [{b}]}}
train: {{batch_size: 2, workers: 0, epochs: 2, repeat: 1, log_interval: 1, lr: 0.002, amp: false}}
"""
RCNN_KD = """teacher: {{config: rcnn_teacher.yaml}}
distill:
  local: [{{feature: fp, importance: channel_max, num_nodes: 512, k: 8, tau: 1.0, pool: max}}]
"""


def rcnn_model(a: int, b: int) -> str:
    """The tiny PointRCNN config text with level-1 width ``a`` and every other width ``b``."""
    return RCNN.format(base=PAPER_RCNN, a=a, b=b, fp1=2 * b + 2 * b, fp2=b + 2 * b, fp4=b + 1)


def train(tmp_path, root, configs, name="teacher.yaml", sub="run", extra=(), stop_at=None,
          resume=False, teacher=None):
    path = str(configs / name)
    cfg = load_config(path, (f"data.root={root}",) + tuple(extra))
    trainer = Trainer(cfg, path, str(tmp_path / sub), resume=resume, teacher_checkpoint=teacher,
                      device="cpu", log=lambda *_: None, progress=False)
    return trainer.run(stop_at=stop_at)


