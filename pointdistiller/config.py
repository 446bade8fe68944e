"""Configs: YAML files with at most one ``base:`` level, ``--set a.b=c`` overrides, typed validation.

A config file is a mapping of sections (``model``, and later ``data``, ``train``, ``distill``,
``teacher``). ``base: other.yaml`` (relative to the file) names one base config whose keys are
deep-merged under the file's own; a base cannot have a base. ``--set a.b=c`` overrides are applied
last (``c`` is parsed as YAML). Nothing is evaluated, nothing is looked up case-insensitively, and
every key must be known: an unknown key is a :class:`ConfigError` naming the full key path and the
file (or the ``--set``) it came from.

Validation is driven by type hints: :class:`Config` is a dataclass with one field per section; a
section is a dataclass (checked recursively: ``int``, ``float``, ``bool``, ``str``, ``Optional``,
``Literal``, ``List``/``Sequence``, ``Tuple``, ``Dict``, nested dataclasses) or, for ``model``, the
constructor signature of the detector class named by ``model.type`` (its ``head`` is a dataclass). To add a section: write its dataclass (every field typed, with a default where one
makes sense) and add a field ``name: Optional[NameConfig] = None`` to :class:`Config`.

YAML note: floats in exponent form without a dot (``1e-3``) are read as floats here (plain PyYAML
reads them as strings).
"""
import collections.abc
import copy
import dataclasses
import inspect
import os
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Literal, Optional, Sequence, Tuple, Union

import yaml

from pointdistiller.distill.config import DistillConfig  # noqa: F401 (type hints of Config)
from pointdistiller.engine.sections import DataConfig, TeacherConfig, TrainConfig  # noqa: F401

# Signature: (key path "a.b.c") -> where that key came from (a file path or "--set a.b=c").
Where = Callable[[str], str]


class ConfigError(ValueError):
    """A config file or override is malformed, names an unknown key, or has a value of a wrong type."""


# ---------------------------------------------------------------------------------------------------
# Sections


def _validate_model(value: Any, key: str, where: Where) -> Dict[str, Any]:
    """Checks the ``model`` section against the detector's constructor; fills in defaults."""
    from pointdistiller.detectors.build import DETECTORS  # imports torch/spconv: only when needed

    if not isinstance(value, dict):
        raise ConfigError(f"{where(key)}: '{key}' must be a mapping, got {_kind(value)}")
    name = value.get("type")
    if not isinstance(name, str) or name not in DETECTORS:
        raise ConfigError(f"{where(key + '.type')}: '{key}.type' must be one of {sorted(DETECTORS)}, "
                          f"got {name!r}")
    cls = DETECTORS[name]
    params, hints = _signature(cls)
    out: Dict[str, Any] = {"type": name}
    for k, v in value.items():
        sub = f"{key}.{k}"
        if k == "type":
            continue
        if k not in params:
            raise ConfigError(f"{where(sub)}: unknown key '{sub}' (a {cls.__name__} has "
                              f"{', '.join(params)})")
        out[k] = _convert(v, hints.get(k), sub, where)
    for k, p in params.items():
        if k not in out:
            if p.default is inspect.Parameter.empty:
                raise ConfigError(f"{where(key)}: missing required key '{key}.{k}'")
            out[k] = p.default
    return out


@dataclass
class Config:
    """A full configuration; one field per top-level section (unknown top-level keys are errors).

    Attributes:
        model: the detector: ``type`` (``pointpillars`` | ``second``) plus every constructor argument
            of that class (defaults filled in), typed by its signature (``head`` is an
            ``AnchorHeadConfig``).
            Build it with ``pointdistiller.detectors.build.build_detector(cfg.model)``.
    """

    model: Optional[Dict[str, Any]] = field(default=None, metadata={"validate": _validate_model})
    data: Optional["DataConfig"] = None
    train: Optional["TrainConfig"] = None
    teacher: Optional["TeacherConfig"] = None
    distill: Optional["DistillConfig"] = None


# ---------------------------------------------------------------------------------------------------
# Loading


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML loader that rejects duplicate keys, reads ``1e-3`` as a float and remembers how each
    number was written (a string field given ``0123`` or ``1e5`` keeps the text the user typed)."""


class _Int(int):
    """A YAML integer and the text it was read from."""

    text: str


class _Float(float):
    """A YAML float and the text it was read from."""

    text: str


def _with_text(kind, construct):
    def constructor(loader, node):
        value = kind(construct(loader, node))
        value.text = node.value
        return value

    return constructor


_StrictLoader.add_constructor("tag:yaml.org,2002:int",
                              _with_text(_Int, yaml.SafeLoader.construct_yaml_int))
_StrictLoader.add_constructor("tag:yaml.org,2002:float",
                              _with_text(_Float, yaml.SafeLoader.construct_yaml_float))


_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False):
    seen = {}
    for key_node, _ in node.value:
        k = loader.construct_object(key_node, deep=deep)
        if k in seen:
            raise ConfigError(f"{loader.name}:{key_node.start_mark.line + 1}: duplicate key {k!r} "
                              f"(first at line {seen[k]})")
        seen[k] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _parse_yaml(text: str, name: str) -> Any:
    try:
        loader = _StrictLoader(text)
        loader.name = name
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{name}{line}: invalid YAML: {problem}") from None


def _read_yaml(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    data = _parse_yaml(text, path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections, got {_kind(data)}")
    for k in data:
        if not isinstance(k, str):
            raise ConfigError(f"{path}: top-level keys must be strings, got {k!r}")
    return data


def parse_override(text: str) -> Tuple[Tuple[str, ...], Any]:
    """``"a.b=c"`` -> ``(("a", "b"), yaml.safe_load("c"))``."""
    if not isinstance(text, str) or "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. model.pillar_channels=32")
    key, raw = text.split("=", 1)
    path = tuple(key.strip().split("."))
    if not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", p) for p in path):
        raise ConfigError(f"--set {text!r}: bad key {key!r} (dot-separated names expected)")
    return path, _parse_yaml(raw, f"--set {text}")


def _deep_merge(base: Dict[str, Any], child: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(base)
    for k, v in child.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _has_path(data: Any, path: Sequence[str]) -> bool:
    for p in path:
        if not isinstance(data, dict) or p not in data:
            return False
        data = data[p]
    return True


def load_raw(path: str, overrides: Iterable[str] = ()) -> Tuple[Dict[str, Any], Where]:
    """Reads ``path`` (and its base), applies ``overrides``; no validation.

    Returns:
        ``(merged mapping, where)``: ``where("a.b")`` names the file or ``--set`` that set key
        ``a.b`` (used in error messages).
    """
    if isinstance(overrides, str):
        raise TypeError("overrides: a sequence of 'KEY=VALUE' strings expected, got one string")
    child = _read_yaml(path)
    base_path, base = None, {}
    if "base" in child:
        base_name = child.pop("base")
        if not isinstance(base_name, str) or not base_name:
            raise ConfigError(f"{path}: 'base' must be a file name relative to this file, "
                              f"got {base_name!r}")
        base_path = os.path.normpath(os.path.join(os.path.dirname(path), base_name))
        if not os.path.isfile(base_path):
            raise ConfigError(f"{path}: base config {base_path} not found")
        base = _read_yaml(base_path)
        if "base" in base:
            raise ConfigError(f"{path}: its base {base_path} has a base of its own "
                              f"({base['base']!r}); at most one base level is allowed")
    merged = _deep_merge(base, child)
    applied: List[Tuple[Tuple[str, ...], str]] = []
    for text in overrides:
        keys, value = parse_override(text)
        node = merged
        for i, k in enumerate(keys[:-1]):
            if k not in node or node[k] is None:
                node[k] = {}
            elif not isinstance(node[k], dict):
                raise ConfigError(f"--set {text}: '{'.'.join(keys[:i + 1])}' is not a mapping")
            else:
                node[k] = dict(node[k])
            node = node[k]
        node[keys[-1]] = value
        applied.append((keys, text))

    def where(key: str) -> str:
        key = re.sub(r"\[\d+\]", "", key)  # list items count as their list's key
        keys = tuple(key.split(".")) if key else ()
        for set_keys, text in reversed(applied):
            n = min(len(set_keys), len(keys))
            if set_keys[:n] == keys[:n]:
                return f"--set {text}"
        if base_path is not None and not _has_path(child, keys) and _has_path(base, keys):
            return base_path
        return path

    return merged, where


def load_config(path: str, overrides: Iterable[str] = ()) -> Config:
    """Loads, merges, overrides and validates a config.

    Args:
        path: YAML file.
        overrides: ``"a.b=c"`` strings (from ``--set``), applied in order after the base merge.

    Raises:
        ConfigError: unreadable/invalid YAML, two base levels, unknown keys, wrong types.
    """
    raw, where = load_raw(path, overrides)
    return _from_mapping(Config, raw, "", where)


def add_set_argument(parser) -> None:
    """Adds the ``--set KEY=VALUE`` option (repeatable) to an ``argparse`` parser (dest ``set``)."""
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set model.pillar_channels=32 "
                             "(VALUE is parsed as YAML; repeatable)")


def _plain(value: Any) -> Any:
    """``value`` with the loader's number types (:class:`_Int`, :class:`_Float`) made plain."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, _Int):
        return int(value)
    if isinstance(value, _Float):
        return float(value)
    return value


def config_to_dict(cfg: Any) -> Any:
    """A plain, YAML-dumpable copy of a validated config (dataclasses -> dicts, tuples -> lists)."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, dict):
        return {k: config_to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [config_to_dict(v) for v in cfg]
    return _plain(cfg)


# Config fields added after runs were recorded, each with the value under which a config holding it
# behaves as one written before the field existed: (section, field) of a section, or
# (section, list, field) of each term of a list. A run started before such a field resumes with the
# field at that value (trainer), and benchmark rows stay current (bm_kd_synthetic.py).
ADDED_FIELDS: Dict[Tuple[str, ...], Any] = {
    ("distill", "warmup_iters"): 0,
    ("distill", "local", "teacher_graph"): "trained",
}


def without_added_fields(resolved: Any, fields: Dict[Tuple[str, ...], Any] = ADDED_FIELDS) -> Any:
    """A copy of the plain config dict ``resolved`` (``config_to_dict``, or a work dir's
    config.yaml) without the ``fields`` that hold their neutral value: the same config as it
    resolved before those fields existed."""
    out = copy.deepcopy(resolved)
    if not isinstance(out, dict):
        return out
    for path, neutral in fields.items():
        section = out.get(path[0])
        if not isinstance(section, dict):
            continue
        blocks = [section] if len(path) == 2 else section.get(path[1]) or []
        for block in blocks:
            if isinstance(block, dict) and path[-1] in block and block[path[-1]] == neutral:
                del block[path[-1]]
    return out


def same_run_config(previous: Any, resolved: Any) -> bool:
    """Whether a work dir's config.yaml (``previous``) describes the run of ``resolved``: equal
    once the :data:`ADDED_FIELDS` at their neutral value are left out (``pd-train --resume``'s
    check, and bm_kd_synthetic's choice between resuming a work dir and setting it aside)."""
    return without_added_fields(previous) == without_added_fields(resolved)


# ---------------------------------------------------------------------------------------------------
# Type-hint driven validation


def _kind(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _describe(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return re.sub(r"\btyping\.", "", getattr(tp, "__name__", None) if isinstance(tp, type)
                  else str(tp))


def _signature(cls: type) -> Tuple[Dict[str, inspect.Parameter], Dict[str, Any]]:
    """Named constructor parameters (no self, no ``*args``/``**kwargs``) and their type hints."""
    params = {name: p for name, p in inspect.signature(cls.__init__).parameters.items()
              if name != "self" and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                               inspect.Parameter.KEYWORD_ONLY)}
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # unresolvable forward references: names are still checked
        hints = {}
    return params, hints


def _from_mapping(cls: type, value: Any, key: str, where: Where) -> Any:
    """Builds dataclass ``cls`` from a mapping; unknown keys, missing required keys and wrong types
    are errors."""
    label = key or "top level"
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where(key)}: '{label}' must be a mapping, got {_kind(value)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    for k in value:
        if k not in fields:
            sub = f"{key}.{k}" if key else str(k)
            raise ConfigError(f"{where(sub)}: unknown key '{sub}' (known at {label}: "
                              f"{', '.join(fields) or 'none'})")
    kwargs = {}
    for name, f in fields.items():
        sub = f"{key}.{name}" if key else name
        if name not in value:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{where(key)}: missing required key '{sub}'")
            continue
        validate = f.metadata.get("validate")
        if validate is not None and value[name] is not None:
            kwargs[name] = validate(value[name], sub, where)
        else:
            kwargs[name] = _convert(value[name], hints.get(name), sub, where)
    return cls(**kwargs)


def _convert(value: Any, tp: Any, key: str, where: Where) -> Any:
    """``value`` checked against type hint ``tp`` (lists become tuples for ``Tuple`` hints)."""
    if tp is None or tp is Any or tp is inspect.Parameter.empty:
        return _plain(value)

    def fail():
        raise ConfigError(f"{where(key)}: '{key}' must be {_describe(tp)}, got {_kind(value)}")

    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        if value is None and type(None) in args:
            return None
        alternatives = [a for a in args if a is not type(None)]
        if len(alternatives) == 1:   # Optional[X]: X's own error names the key that is wrong
            return _convert(value, alternatives[0], key, where)
        for a in alternatives:
            try:
                return _convert(value, a, key, where)
            except ConfigError:
                pass
        fail()
    if origin is Literal:
        if value not in args or isinstance(value, bool) != any(isinstance(a, bool) for a in args):
            fail()
        return value
    if tp is bool:
        if not isinstance(value, bool):
            fail()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail()
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail()
        return float(value)
    if tp is str:
        if isinstance(value, (_Int, _Float)):
            return value.text     # e.g. a sha256 of digits only, or a name like 1e5
        if not isinstance(value, str):
            fail()
        return value
    if origin in (list, tuple, collections.abc.Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            fail()
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where(key)}: '{key}' must have {len(args)} values, got "
                                  f"{len(value)}: {value!r}")
            return tuple(_convert(v, a, f"{key}[{i}]", where)
                         for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [_convert(v, item, f"{key}[{i}]", where) for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin in (dict, collections.abc.Mapping) or tp is dict:
        if not isinstance(value, dict):
            fail()
        key_tp, value_tp = args if args else (Any, Any)
        return {_convert(k, key_tp, key, where): _convert(v, value_tp, f"{key}.{k}", where)
                for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return _from_mapping(tp, value, key, where)
    if isinstance(tp, type) and not isinstance(value, tp):
        fail()
    return value
