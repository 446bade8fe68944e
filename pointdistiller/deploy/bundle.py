"""The deployment bundle: what ``pd-export`` writes and the runtime reads (no torch here).

    BUNDLE/model.onnx    the network (pillars -> head maps)
    BUNDLE/anchors.npy   [N, 7] float32 anchors in the head's flattened order
    BUNDLE/deploy.json   everything else from the training config, and the sha256 of both files
"""
import hashlib
import json
import os
from typing import Any, Dict

BUNDLE_FORMAT = "pointdistiller.deploy/1"
MODEL_ONNX = "model.onnx"
ANCHORS = "anchors.npy"
DEPLOY_JSON = "deploy.json"
INPUT_NAMES = ["pillars", "num_points", "coords"]
OUTPUT_NAMES = ["cls", "box", "dir"]


class BundleError(ValueError):
    """A bundle is missing, malformed or altered (its message names the file)."""


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_bundle(folder: str) -> Dict[str, Any]:
    """``deploy.json`` of ``folder``, after checking its format and the sha256 of its files."""
    path = os.path.join(folder, DEPLOY_JSON)
    try:
        with open(path, encoding="utf-8") as f:
            deploy = json.load(f)
    except FileNotFoundError:
        raise BundleError(f"{path}: not found (is {folder} a bundle written by pd-export?)") from None
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(deploy, dict) or deploy.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{path}: not a pointdistiller deployment bundle ({BUNDLE_FORMAT})")
    for key in ("network", "anchors_file"):
        entry = deploy[key]
        file = os.path.join(folder, entry["file"])
        if not os.path.isfile(file):
            raise BundleError(f"{file}: missing from the bundle")
        digest = sha256_file(file)
        if digest != entry["sha256"]:
            raise BundleError(f"{file}: sha256 {digest} does not match {DEPLOY_JSON} "
                              f"({entry['sha256']}); the bundle was altered")
    return deploy
