"""The detection classes of this toolkit: one order for every head, label index, result file and
evaluation."""
from typing import Tuple

CLASS_NAMES: Tuple[str, ...] = ("Car", "Pedestrian", "Cyclist")
