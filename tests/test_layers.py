"""The package's layering: no module imports from a layer above it, no hidden import edges.

Every import inside ``samkit`` is read with ``ast`` (imports under ``if TYPE_CHECKING:`` are
not run, so they do not count) and checked against the order below.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import samkit

ROOT = Path(samkit.__file__).parent

# Lowest first. A module may import its own package (top-level files: only themselves) and any
# package of a strictly lower rank; packages of the same rank do not import each other.
LAYERS: list[tuple[str, ...]] = [
    ("errors",),
    ("ops",),  # plain functions over arrays and tensors
    ("models", "data"),  # nn.Modules + InputSpec; image sources and files, datasets
    ("zoo", "results"),  # encoder-kind registry, variants, checkpoints, downloads; Results
    ("predict",),  # one image: geometry, prompts, hardware, the predictors, the decode path
    ("everything", "annotate", "train", "export"),
    ("pipeline",),  # a source of images -> Results
    ("model",),  # the SAM facade
    ("cli",),
    ("__main__", "__init__"),
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _unit(module: str) -> str:
    """The layer unit of ``samkit.a.b``: ``a`` (a package or a top-level file)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def package_imports() -> list[tuple[str, str, int]]:
    """``(importer, imported, line)`` for every run-time import of a samkit module."""
    edges = []
    for path in sorted(ROOT.rglob("*.py")):
        name = _module_name(path)
        is_pkg = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), str(path))
        skip = _type_checking_lines(tree)
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets = [mod]
                if not node.module:  # from . import x: x may be a module
                    targets = [f"{mod}.{a.name}" for a in node.names]
            else:
                continue
            edges += [(name, t, node.lineno) for t in targets if t.split(".")[0] == "samkit"]
    return edges


def test_every_unit_has_a_layer():
    units = {_unit(_module_name(p)) for p in ROOT.rglob("*.py")}
    assert units <= set(RANK), f"add these to LAYERS: {sorted(units - set(RANK))}"


def test_no_module_imports_from_a_layer_above_it():
    bad = []
    for importer, imported, line in package_imports():
        a, b = _unit(importer), _unit(imported)
        if imported in ("samkit", "samkit.__version__"):
            continue  # the version string
        if a != b and RANK[b] >= RANK[a]:
            bad.append(f"{importer}:{line} imports {imported} (layer {RANK[b]} >= {RANK[a]})")
    assert not bad, "\n".join(bad)


def test_the_checker_sees_an_upward_edge():
    """The rank rule itself: predict -> model (the facade) would be reported."""
    assert RANK[_unit("samkit.model")] > RANK[_unit("samkit.predict.predictor")]
    assert RANK[_unit("samkit.models.sam")] < RANK[_unit("samkit.zoo.registry")]
    edges = package_imports()
    assert ("samkit.pipeline", "samkit.everything.segment") in {(a, b) for a, b, _ in edges}


def test_no_importlib_outside_the_lazy_package_tables():
    """``importlib`` only serves the lazy public-name tables of ``__init__`` files."""
    users = []
    for path in ROOT.rglob("*.py"):
        if path.name != "__init__.py" and "importlib" in path.read_text():
            users.append(str(path.relative_to(ROOT)))
    assert not users


@pytest.mark.parametrize("old", sorted(samkit.MOVED_MODULES))
def test_old_module_paths_are_the_moved_modules(old):
    __import__(old)
    assert sys.modules[old] is sys.modules[samkit.MOVED_MODULES[old]]


def test_public_names_resolve():
    for name in samkit.__all__:
        assert getattr(samkit, name) is not None
