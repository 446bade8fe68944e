"""Synthetic LiDAR scenes in KITTI's layout: the toolkit's built-in default dataset.

A simulated HDL-64E-like LiDAR (:mod:`.sensors`) ray-casts random street scenes (:mod:`.scene`,
:mod:`.raycast`); labels are computed from what the LiDAR and camera 2 see (:mod:`.frame`);
:mod:`.dataset` writes frames to disk with a process pool.
"""
from pointdistiller.kitti_tools.synth.dataset import (GENERATOR_VERSION, generate_dataset,
                                                      generate_frame, split_ids)
from pointdistiller.kitti_tools.synth.frame import (OCCLUSION_THRESHOLDS, SynthFrame,
                                                    occlusion_level, render_frame)
from pointdistiller.kitti_tools.synth.scene import Scene, SceneObject, generate_scene
from pointdistiller.kitti_tools.synth.sensors import IMAGE_SHAPE, LidarModel, kitti_calib

__all__ = ["GENERATOR_VERSION", "IMAGE_SHAPE", "LidarModel", "OCCLUSION_THRESHOLDS", "Scene",
           "SceneObject", "SynthFrame", "generate_dataset", "generate_frame", "generate_scene",
           "kitti_calib", "occlusion_level", "render_frame", "split_ids"]
