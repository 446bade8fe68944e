"""Reports of an :class:`~.core.EvalResult`: the python port's text block, the nested JSON dict and
the port's flat ``ret_dict``.

Text format (``kitti_object_eval_python.get_official_eval_result``): per class, per overlap set, an
R11 block headed ``Car AP@0.70, 0.70, 0.70:`` (the minimum overlaps for bbox, bev, 3d) and an R40
block headed ``Car AP_R40@...``; each holds ``bbox AP:``, ``bev  AP:``, ``3d   AP:`` lines with
easy, moderate, hard as ``:.4f`` and, when AOS was computed, an ``aos  AP:`` line as ``:.2f``.
"""
from typing import Dict, List

from pointdistiller.kitti_tools.evaluation import params
from pointdistiller.kitti_tools.evaluation.core import ap_r11, ap_r40

_LABELS = {"bbox": "bbox AP:", "bev": "bev  AP:", "3d": "3d   AP:", "aos": "aos  AP:"}
_PORT_METRIC = {"bbox": "image", "bev": "bev", "3d": "3d", "aos": "aos"}


def _ap_table(result, points: int) -> Dict[str, object]:
    """``{metric: [set, class, difficulty] AP array}`` for bbox/bev/3d/aos (aos None if absent)."""
    ap = ap_r40 if points == 40 else ap_r11
    table = {metric: ap(result.precision[:, m]) for m, metric in enumerate(params.METRICS)}
    table["aos"] = ap(result.orientation) if result.compute_aos else None
    return table


def format_summary(result) -> str:
    """The python port's text block; every line ends with ``\\n``."""
    tables = {11: _ap_table(result, 11), 40: _ap_table(result, 40)}
    metrics = params.METRICS + (("aos",) if result.compute_aos else ())
    lines: List[str] = []
    for c, cls in enumerate(result.classes):
        for s, overlap_set in enumerate(params.OVERLAP_SETS):
            overlaps = ", ".join(f"{params.min_overlap(overlap_set, m, cls):.2f}"
                                 for m in params.METRICS)
            for points, tag in ((11, "AP"), (40, "AP_R40")):
                lines.append(f"{cls} {tag}@{overlaps}:")
                for metric in metrics:
                    digits = 2 if metric == "aos" else 4
                    values = ", ".join(f"{v:.{digits}f}" for v in tables[points][metric][s, c])
                    lines.append(_LABELS[metric] + values)
    return "".join(line + "\n" for line in lines)


def json_dict(result) -> Dict:
    """``{"strict"|"loose": {class: {"bbox"|"bev"|"3d"|"aos": {"R40": [e, m, h], "R11": [...]}}}}``,
    AP in percent; ``"aos"`` is None when AOS was not computed."""
    tables = {40: _ap_table(result, 40), 11: _ap_table(result, 11)}
    out: Dict = {}
    for s, overlap_set in enumerate(params.OVERLAP_SETS):
        per_class = out.setdefault(overlap_set, {})
        for c, cls in enumerate(result.classes):
            entry = per_class.setdefault(cls, {})
            for metric in params.METRICS + ("aos",):
                if metric == "aos" and not result.compute_aos:
                    entry[metric] = None
                    continue
                entry[metric] = {f"R{points}": [float(v) for v in tables[points][metric][s, c]]
                                 for points in (40, 11)}
    return out


def port_ret_dict(result) -> Dict[str, float]:
    """The python port's ``ret_dict``: strict set, R40, keys ``{cls}_{3d|bev|image|aos}/{diff}_R40``
    (aos keys only when AOS was computed)."""
    table = _ap_table(result, 40)
    out: Dict[str, float] = {}
    for c, cls in enumerate(result.classes):
        for metric in ("3d", "bev", "bbox", "aos"):
            if table[metric] is None:
                continue
            for d, difficulty in enumerate(params.DIFFICULTIES):
                out[f"{cls}_{_PORT_METRIC[metric]}/{difficulty}_R40"] = float(table[metric][0, c, d])
    return out
