"""Helpers of the trainer tests (imported by their conftest and test modules): tiny PointPillars
configs and one function that runs a training."""
import os

from pointdistiller.config import load_config
from pointdistiller.engine.trainer import Trainer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PAPER_PP = os.path.join(REPO, "configs", "pointpillars", "teacher.yaml")

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


def train(tmp_path, root, configs, name="teacher.yaml", sub="run", extra=(), stop_at=None,
          resume=False, teacher=None):
    path = str(configs / name)
    cfg = load_config(path, (f"data.root={root}",) + tuple(extra))
    trainer = Trainer(cfg, path, str(tmp_path / sub), resume=resume, teacher_checkpoint=teacher,
                      device="cpu", log=lambda *_: None, progress=False)
    return trainer.run(stop_at=stop_at)


