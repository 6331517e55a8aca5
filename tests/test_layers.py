"""The package's layers only import downward: common -> data -> models / evaluation / visualize / tracking ->
engine -> predict -> export / serve / inspect -> demo / api -> cli. A module may import its own package and any lower
layer, never a higher one or a sibling of its own layer (docs/design.md, "Layout"). The package root
(``detzoo/__init__.py``) is the public facade: it holds ``__version__`` at layer 0 and reaches ``load``,
``Model`` and ``Result`` only lazily (PEP 562 ``__getattr__``) and for type checkers."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "detzoo"

LAYERS = {
    "": 0, "common": 0,
    "data": 1,
    "models": 2, "evaluation": 2, "visualize": 2, "tracking": 2,
    "engine": 3,
    "predict": 4,
    "export": 5, "serve": 5, "inspect": 5,
    "demo": 6, "api": 6,
    "cli": 7,
    "__main__": 8,
}


def _unit(module: str) -> str:
    """detzoo.data.coco -> data; detzoo.cli -> cli; detzoo -> ''."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every detzoo import in a file, including imports inside functions."""
    return _imports_in(path.read_text(), _module_name(path), path.name == "__init__.py")


def _imports_in(source: str, name: str, is_package: bool) -> list[tuple[int, str]]:
    package = name if is_package else name.rsplit(".", 1)[0]
    found = []
    tree = ast.parse(source)
    if name == "detzoo":  # the facade: its `if TYPE_CHECKING:` imports never run
        tree.body = [n for n in tree.body if not (isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING")]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "detzoo" or target.startswith("detzoo."):
                found.append((node.lineno, target))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("detzoo")]
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_package_has_a_layer():
    units = {_unit(_module_name(p)) for p in MODULES}
    assert units <= set(LAYERS), f"give these a layer in LAYERS and docs/design.md: {units - set(LAYERS)}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_only_go_down(path):
    wrong = _upward(_module_name(path), _imports(path))
    assert not wrong, "\n".join(f"{path.relative_to(PACKAGE)}:{w}" for w in wrong)


def _upward(name: str, imports: list[tuple[int, str]]) -> list[str]:
    own = _unit(name)
    return [f"{line} imports {target} (layer {LAYERS[_unit(target)]}, {own} is {LAYERS[own]})"
            for line, target in imports
            if _unit(target) not in (own, "") and LAYERS[_unit(target)] >= LAYERS[own]]


def test_the_checker_sees_upward_and_sideways_imports():
    """The check itself, on the imports that used to be there: models -> engine, engine -> predict, and a
    same-layer sibling (models -> evaluation); relative imports inside functions are seen too."""
    source = ("from ..engine.distributed import global_normalizer\n"
              "def f():\n    from ..evaluation import evaluate_detections\n"
              "from .anchors import AnchorSpec\nfrom ..data.transforms import Preprocess\n")
    found = _imports_in(source, "detzoo.models.losses", is_package=False)
    assert [t for _, t in found] == ["detzoo.engine.distributed", "detzoo.models.anchors",
                                     "detzoo.data.transforms", "detzoo.evaluation"]
    assert len(_upward("detzoo.models.losses", found)) == 2
    assert _upward("detzoo.engine.evaluate", [(1, "detzoo.predict")])
    assert not _upward("detzoo.predict.predictor", [(1, "detzoo.engine.inference"), (2, "detzoo.predict.x")])


def test_the_facade_imports_nothing_heavy():
    """`import detzoo` and reaching `detzoo.load` import neither torch nor numpy (the CLI's start-up and
    scripts that only read `__version__` stay fast); calling `load` does."""
    import subprocess
    import sys

    code = ("import sys, detzoo, detzoo.cli; load = detzoo.load; assert callable(load); "
            "heavy = sorted(m for m in ('torch', 'numpy', 'torchvision') if m in sys.modules); print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
