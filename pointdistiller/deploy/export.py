"""Export of a trained PointPillars to a deployment bundle: ONNX network + everything the torch-free
runtime (:mod:`pointdistiller.deploy.runtime`) needs from the training config.

The graph runs one frame from its pillars to the head's raw maps::

    pillars [P, M, C] float32, num_points [P] int32, coords [P, 3] int32 (z, y, x)
      -> pillar feature net -> scatter to the BEV grid -> backbone -> neck -> head
      -> cls [1, A*K, H, W], box [1, A*7, H, W], dir [1, A*2, H, W]

with a dynamic pillar count ``P``; ``--precision fp16`` runs the 2D part (backbone, neck, head) in
float16. Voxelization, decoding and NMS stay outside the graph, as in
every deployed PointPillars; their settings (and the anchors) go into ``deploy.json`` /
``anchors.npy`` beside ``model.onnx``. SECOND cannot be exported: its sparse convolutions (spconv)
have no ONNX form.
"""
import json
import os
import shutil
import tempfile
from typing import Any, Dict, List

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pointdistiller.kitti_tools.fileio import OutputError, check_writable_dir

from pointdistiller.deploy.bundle import (ANCHORS, BUNDLE_FORMAT, DEPLOY_JSON, INPUT_NAMES,
                                          MODEL_ONNX, OUTPUT_NAMES, sha256_file)

DEFAULT_OPSET = 18


class ExportError(ValueError):
    """The model cannot be exported (its message says why and what to do)."""


def _fold_bn(weight: Tensor, bn: nn.BatchNorm2d, bias: Tensor = None):
    """``(weight, bias)`` of a conv whose output channel ``o`` (dim 0) is followed by ``bn`` in
    eval mode, folded into one conv."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    if bias is not None:
        shift = shift + bias * scale
    return weight * scale.view(-1, *([1] * (weight.dim() - 1))), shift


class _InferenceHead(nn.Module):
    """The anchor head's three 1x1 convs as one (their input is the same map), split after."""

    def __init__(self, head: nn.Module):
        super().__init__()
        convs = (head.conv_cls, head.conv_box, head.conv_dir)
        self.sizes = [c.out_channels for c in convs]
        self.conv = nn.Conv2d(convs[0].in_channels, sum(self.sizes), 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.cat([c.weight for c in convs]))
            self.conv.bias.copy_(torch.cat([c.bias for c in convs]))

    def forward(self, bev: Tensor):
        a, b, _ = self.sizes
        out = self.conv(bev)
        return out[:, :a], out[:, a:a + b], out[:, a + b:]


class PointPillarsNetwork(nn.Module):
    """The exportable network of one frame of a :class:`~pointdistiller.detectors.pointpillars.
    PointPillars` in eval mode: the same function and weights, rewritten exactly for inference.

    Pillar feature net: with its BatchNorm (running statistics) folded into the linear layer, the
    decorated point ``d = (p, xyz - mean, xy - centre)`` gives ``W d + t = A p + b_pillar``: ``A``
    acts on the raw point and ``b_pillar = t - W_mean mean - W_centre centre`` is one vector per
    pillar. ReLU and ``+ b_pillar`` are monotone, so the max over a pillar's points is
    ``relu(max_points(A p) + b_pillar)``. The points enter relative to the pillar's first point
    (every pillar holds at least one): ``A p = A (p - p_0) + A p_0``, and a padding slot, whatever
    a voxelizer left in it, becomes 0, a copy of the first point, so the max may run over all
    slots. ``A (p - p_0)`` runs as a 1x1 conv over the ``[1, c, P, M]`` image of the pillars and
    the max as a ``1 x M`` max-pool, which leaves the features channel-major ``[C, P]``, the layout
    the BEV canvas is scattered in; the pillar terms (``p_0``, mean, centre) are one ``[C, 2c + 2]``
    product. The head's three 1x1 convs run as one (:class:`_InferenceHead`). Backbone and neck are
    used as they are (onnxruntime fuses their conv + BN + ReLU itself). Written for onnxruntime's
    CPU kernels, where the direct form's masked ``Where`` on ``[P, M, c]`` and the ``[P, M, C]``
    MatMul + ReduceMax cost a fifth of the 4x student's network.
    """

    def __init__(self, model: nn.Module, half: bool = False):
        super().__init__()
        pfn = model.voxel_encoder
        self.backbone = model.backbone
        self.neck, self.head = model.neck, _InferenceHead(model.head)
        self.nx, self.ny = model.scatter.nx, model.scatter.ny
        self.channels = model.scatter.in_channels
        self.max_points = int(model.voxelization.max_points)
        c = pfn.num_point_features
        with torch.no_grad():
            w, shift = _fold_bn(pfn.linear.weight, pfn.norm)                      # [C, c + 5]
            point = w[:, :c].clone()
            point[:, :3] += w[:, c:c + 3]                                          # xyz - mean
            point[:, :2] += w[:, c + 3:c + 5]                                      # xy - centre
            # A p = A (p - first) + A first; the pillar terms act on (first, mean, centre)
            stats = w.new_zeros(w.shape[0], 2 * c + 2)
            stats[:, :c] = point
            stats[:, c:c + 3] = -w[:, c:c + 3]    # the mean's columns past xyz have no weight
            stats[:, 2 * c:] = -w[:, c + 3:c + 5]
        self.register_buffer("w_point", point[:, :, None, None].contiguous())      # [C, c, 1, 1]
        self.register_buffer("w_stats", stats.contiguous())                         # [C, 2c + 2]
        self.register_buffer("shift", shift.detach()[:, None].contiguous())        # [C, 1]
        self.voxel_size, self.point_range = pfn.voxel_size, pfn.point_range
        self.half_bev = half
        if half:   # the pillar feature net stays float32: metre coordinates need its precision
            for module in (self.backbone, self.neck, self.head):
                module.half()

    def forward(self, pillars: Tensor, num_points: Tensor, coords: Tensor):
        m = self.max_points
        valid = (torch.arange(m, device=pillars.device)[None, :]
                 < num_points[:, None].long()).to(pillars.dtype)[..., None]        # [P, M, 1]
        first = pillars[:, 0]                                                      # [P, c]
        # points relative to the pillar's first point; padding slots (whatever a voxelizer left
        # there) become 0, i.e. a copy of the first point
        rel = (pillars - first[:, None]) * valid                                   # [P, M, c]
        count = num_points.clamp(min=1).to(pillars.dtype)[:, None]
        mean = first + rel.sum(dim=1) / count                                      # [P, c]
        vx, vy = self.voxel_size[0], self.voxel_size[1]
        centre = torch.stack([coords[:, 2].to(pillars.dtype) * vx + (vx / 2 + self.point_range[0]),
                              coords[:, 1].to(pillars.dtype) * vy + (vy / 2 + self.point_range[1])],
                             dim=1)                                                # [P, 2]
        stats = torch.cat([first, mean, centre], dim=1)                            # [P, 2c + 2]
        bias = self.shift + torch.matmul(self.w_stats, stats.t())                  # [C, P]
        per_point = F.conv2d(rel.permute(2, 0, 1).unsqueeze(0), self.w_point)     # [1, C, P, M]
        pooled = F.max_pool2d(per_point, (1, m))[0, :, :, 0]                       # [C, P]
        pillar_features = torch.relu(pooled + bias)                                # [C, P]
        flat = (coords[:, 1].long() * self.nx + coords[:, 2].long())[None, :]
        canvas = pillar_features.new_zeros(self.channels, self.ny * self.nx)
        canvas = canvas.scatter(1, flat.expand(self.channels, -1), pillar_features)
        bev = canvas.view(1, self.channels, self.ny, self.nx)
        if self.half_bev:
            bev = bev.half()
        cls, box, dirs = self.head(self.neck(self.backbone(bev)))
        return cls.float(), box.float(), dirs.float()


def deploy_settings(model: nn.Module, model_cfg: Dict[str, Any], data_cfg) -> Dict[str, Any]:
    """Every value the runtime needs, from the model (built from its config) and the data section."""
    head = model.head
    v = model.voxelization
    anchors, _ = head.anchors(torch.device("cpu"))
    return {
        "detector": model_cfg["type"],
        "voxelization": {"voxel_size": list(v.voxel_size), "point_range": list(v.point_range),
                         "max_points": int(v.max_points), "max_voxels": int(v.max_voxels[1])},
        "input": {"num_point_features": int(model.voxel_encoder.num_point_features),
                  "columns": ["x", "y", "z", "intensity"][:model.voxel_encoder.num_point_features],
                  "fov_reduce": bool(data_cfg.fov_reduce)},
        "class_names": list(head.class_names),
        "anchors": {"count": int(anchors.shape[0]), "per_cell": int(head.num_anchors),
                    "feature_map_size": list(head.feature_map_size),
                    "layout": "[H, W, A] flattened, each (x, y, z_centre, l, w, h, yaw)"},
        "box_coder": {"type": "residual", "code_size": 7},
        "post_processing": {"score_threshold": float(head.score_threshold),
                            "nms_pre": int(head.nms_pre),
                            "nms_iou_threshold": float(head.nms_iou_threshold),
                            "max_detections": int(head.max_detections),
                            "dir_offset": float(head.dir_offset), "dir_bins": 2},
    }


def export_bundle(config: str, checkpoint: str, out_dir: str, precision: str = "fp32",
                  opset: int = DEFAULT_OPSET, overrides=(), log=print) -> Dict[str, Any]:
    """Writes the bundle of ``config`` + ``checkpoint`` into ``out_dir`` (atomically: a complete
    bundle replaces the folder, or nothing changes). Returns the ``deploy.json`` content."""
    from pointdistiller.config import load_config
    from pointdistiller.detectors.build import build_detector
    from pointdistiller.engine.checkpoint import load_checkpoint, load_model_weights
    from pointdistiller.engine.sections import DataConfig

    if precision not in ("fp32", "fp16"):
        raise ExportError(f"--precision must be fp32 or fp16, got {precision!r}")
    cfg = load_config(config, overrides)
    if cfg.model is None:
        raise ExportError(f"{config}: no model section")
    if cfg.model["type"] != "pointpillars":
        why = {"second": "its sparse convolutions (spconv) have no ONNX form",
               "point_rcnn": "its proposal NMS and per-RoI point pooling run between the two "
                             "stages, outside any ONNX graph this exporter writes"}
        raise ExportError(f"{config}: a {cfg.model['type']} cannot be exported: only PointPillars "
                          f"goes through ONNX ({why.get(cfg.model['type'], 'no exporter')})")
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise OutputError(f"--out {out_dir}: is not a folder")
    check_writable_dir(os.path.dirname(out_dir), "--out")
    model = build_detector(cfg.model)
    load_model_weights(model, load_checkpoint(checkpoint), checkpoint)
    model.eval()
    network = PointPillarsNetwork(model, half=precision == "fp16").eval()
    settings = deploy_settings(model, cfg.model, cfg.data or DataConfig())

    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.export-", dir=parent)
    try:
        onnx_path = os.path.join(staging, MODEL_ONNX)
        _export_onnx(network, settings, onnx_path, opset)
        anchors = model.head.anchors(torch.device("cpu"))[0].numpy().astype(np.float32)
        np.save(os.path.join(staging, ANCHORS), anchors, allow_pickle=False)
        deploy = {"format": BUNDLE_FORMAT, **settings,
                  "network": {"file": MODEL_ONNX, "sha256": sha256_file(onnx_path), "opset": opset,
                              "precision": precision, "inputs": INPUT_NAMES,
                              "outputs": _output_shapes(model)},
                  "anchors_file": {"file": ANCHORS, "sha256": sha256_file(os.path.join(staging, ANCHORS))},
                  "source": {"config": os.path.abspath(config), "overrides": list(overrides),
                             "checkpoint": os.path.abspath(checkpoint),
                             "checkpoint_sha256": sha256_file(checkpoint),
                             "torch": torch.__version__}}
        with open(os.path.join(staging, DEPLOY_JSON), "w", encoding="utf-8") as f:
            json.dump(deploy, f, indent=1)
            f.write("\n")
        _swap_in(staging, out_dir)
        staging = None
    except OSError as exc:
        raise OutputError(f"--out {out_dir}: cannot write the bundle ({exc.strerror or exc})") from None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    log(f"pd-export: {out_dir}: {MODEL_ONNX} ({precision}, opset {opset}), {ANCHORS}, {DEPLOY_JSON}")
    return deploy


def _output_shapes(model: nn.Module) -> Dict[str, list]:
    h, w = model.head.feature_map_size
    a, k = model.head.num_anchors, model.head.num_classes
    return {"cls": [1, a * k, h, w], "box": [1, a * 7, h, w], "dir": [1, a * 2, h, w]}


def example_inputs(settings: Dict[str, Any], num_pillars: int = 64, seed: int = 0):
    """Random pillars of the bundle's shape (tracing input; any values work)."""
    gen = torch.Generator().manual_seed(seed)
    v = settings["voxelization"]
    m, c = v["max_points"], settings["input"]["num_point_features"]
    h, w = settings["anchors"]["feature_map_size"]
    pillars = torch.randn(num_pillars, m, c, generator=gen)
    num_points = torch.randint(1, m + 1, (num_pillars,), generator=gen, dtype=torch.int32)
    coords = torch.zeros(num_pillars, 3, dtype=torch.int32)
    cells = torch.randperm(h * w, generator=gen)[:num_pillars]   # any cells of the BEV grid
    nx = round((v["point_range"][3] - v["point_range"][0]) / v["voxel_size"][0])
    coords[:, 1], coords[:, 2] = (cells // w).int() % max(1, nx), (cells % w).int()
    return pillars, num_points, coords


def _export_onnx(network: nn.Module, settings: Dict[str, Any], path: str, opset: int) -> None:
    inputs = example_inputs(settings)
    pillars = torch.export.Dim("pillars", min=1, max=1 << 20)
    with torch.no_grad():
        program = torch.onnx.export(
            network, inputs, dynamo=True, opset_version=opset, input_names=INPUT_NAMES,
            output_names=OUTPUT_NAMES,
            dynamic_shapes={"pillars": {0: pillars}, "num_points": {0: pillars},
                            "coords": {0: pillars}},
            optimize=True, verify=False, report=False)
    program.save(path)


def _swap_in(staging: str, out_dir: str) -> None:
    """Replaces ``out_dir`` by ``staging`` (an old bundle is renamed away first, then removed)."""
    old = None
    if os.path.exists(out_dir):
        old = out_dir + ".old-" + os.path.basename(staging)
        os.rename(out_dir, old)
    os.rename(staging, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
