"""The package's import rules, read from the source with ``ast`` (nothing is imported): absolute
imports only, and one dependency direction ``ops`` <- ``kitti_tools`` <- ``detectors`` <-
``pointdistiller.{data, distill, engine, cli, ...}``."""
import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# source folder -> (package name, layer); a module may import its own layer or lower ones
FOLDERS = {"ops": ("pointdistiller.ops", 0), "kitti_tools": ("pointdistiller.kitti_tools", 1),
           "detectors": ("pointdistiller.detectors", 2), "pointdistiller": ("pointdistiller", 3),
           "configs": ("pointdistiller.configs", 3)}


def _layer(module: str):
    """Layer of a ``pointdistiller`` module, None for third-party modules."""
    if module != "pointdistiller" and not module.startswith("pointdistiller."):
        return None
    best = ("pointdistiller", 3)
    for package, layer in FOLDERS.values():
        if (module == package or module.startswith(package + ".")) and len(package) > len(best[0]):
            best = (package, layer)
    return best[1]


def _sources():
    for folder, (package, layer) in FOLDERS.items():
        for dirpath, dirnames, files in os.walk(os.path.join(REPO, folder)):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            for name in sorted(files):
                if name.endswith(".py"):
                    yield os.path.relpath(os.path.join(dirpath, name), REPO), layer


SOURCES = sorted(_sources())


def _imports(path):
    tree = ast.parse(open(os.path.join(REPO, path), encoding="utf-8").read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            yield node.lineno, node.level, node.module or ""
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, 0, alias.name


def test_the_rules_see_every_folder():
    layers = {layer for _, layer in SOURCES}
    assert layers == {0, 1, 2, 3} and len(SOURCES) > 80
    assert _layer("pointdistiller.ops.knn_search") == 0 and _layer("pointdistiller.engine") == 3
    assert _layer("pointdistiller.kitti_tools.synth") == 1 and _layer("numpy") is None


@pytest.mark.parametrize("path,layer", SOURCES, ids=[p for p, _ in SOURCES])
def test_absolute_imports_in_one_direction(path, layer):
    problems = []
    for lineno, level, module in _imports(path):
        if level:
            problems.append(f"{path}:{lineno}: relative import ('{'.' * level}{module}')")
            continue
        target = _layer(module)
        if target is not None and target > layer:
            problems.append(f"{path}:{lineno}: imports {module} (layer {target}) from layer {layer}")
    assert not problems, "\n".join(problems)
