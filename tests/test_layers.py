"""The package's imports go one way, read from the source (every import, also those inside functions):

    errors, env, utilities/files, utilities/image_io <- config, labels, plots <- synthesis/ <- segmenter,
    utilities/dataset <- tools (training, export, generator, evaluation, ...) <- entrypoints

The method's core (``synthesis/``) has no nnU-Net imports, so it runs wherever tensors do; nothing imports the
command-line entry points; and no two modules import each other, directly or around a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# where each importable package lives in the checkout (setup.cfg's package_dir)
PACKAGE_DIRS = {
    "nnunet_freetumor": REPO / "nnunet_freetumor",
    "nnunet_freetumor.generator": REPO / "generator",
    "nnunet_freetumor.entrypoints": REPO / "entrypoints",
}
BASE = {"errors", "env", "config", "labels", "plots", "_register"}
NNUNET = ("nnunetv2", "batchgeneratorsv2", "dynamic_network_architectures")


def modules() -> dict[str, Path]:
    out = {}
    for pkg, root in PACKAGE_DIRS.items():
        for f in root.rglob("*.py"):
            parts = [p for p in f.relative_to(root).with_suffix("").parts if p != "__init__"]
            if pkg == "nnunet_freetumor" and parts and parts[0] in ("generator", "entrypoints"):
                continue  # symlinks of a frozen benchmark copy, if any
            out[".".join([pkg, *parts])] = f
    return out


MODULES = modules()


def imports(name: str) -> set[str]:
    """Every module ``name`` imports (top-level names of third-party packages, full names of ours)."""
    out = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            sub = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES]
            out.update(sub or [node.module])
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out - {name}


def layer(name: str) -> int:
    parts = name.split(".")
    if parts[:2] == ["nnunet_freetumor", "entrypoints"]:
        return 4
    if len(parts) == 1:  # the package's __init__
        return 0
    if parts[1] in BASE:
        return 0
    if parts[1] == "synthesis":
        return 1
    if parts[1] == "utilities":  # files and image IO sit under the config; a planned dataset reads the config
        return 2 if parts[2:] == ["dataset"] else 0
    if parts[1] == "segmenter":
        return 2
    return 3


def ours(names: set[str]) -> set[str]:
    return {n for n in names if n in MODULES}


def test_the_layers_are_read_from_the_real_tree():
    assert {
        "nnunet_freetumor.synthesis.pipeline",
        "nnunet_freetumor.segmenter",
        "nnunet_freetumor.generator.train",
    } <= set(MODULES)
    assert "nnunet_freetumor.synthesis.masks" in imports("nnunet_freetumor.synthesis.pipeline")


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_go_one_way(name):
    upward = sorted(m for m in ours(imports(name)) if layer(m) > layer(name))
    assert not upward, f"{name} (layer {layer(name)}) imports {upward} from a higher layer"


@pytest.mark.parametrize("name", sorted(m for m in MODULES if layer(m) == 1))
def test_the_core_has_no_nnunet_imports(name):
    found = sorted(m for m in imports(name) if m.split(".")[0] in NNUNET)
    assert not found, f"{name} imports {found}: the method's core must not depend on nnU-Net"


def test_no_import_circles():
    graph = {m: ours(imports(m)) for m in MODULES}
    circles, done = [], set()

    def visit(m: str, path: list[str]) -> None:
        if m in path:
            circles.append(path[path.index(m) :] + [m])
            return
        if m in done:
            return
        for n in sorted(graph[m]):
            visit(n, path + [m])
        done.add(m)

    for m in sorted(graph):
        visit(m, [])
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)


def test_every_subpackage_is_installed():
    """setup.cfg lists packages one by one: a new subpackage missing there works in an editable install only."""
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    packages = {name for name, f in MODULES.items() if f.name == "__init__.py"}
    assert packages <= listed, f"add {sorted(packages - listed)} to setup.cfg's packages"


MAX_CLASS_LINES, MAX_FUNCTION_LINES = 220, 80


def oversized(tree: ast.AST) -> list[str]:
    out = []
    for node in ast.walk(tree):
        limit = {ast.ClassDef: MAX_CLASS_LINES, ast.FunctionDef: MAX_FUNCTION_LINES}.get(type(node))
        if limit and node.end_lineno - node.lineno + 1 > limit:
            out.append(f"{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    return out


def test_the_size_rule_sees_long_code():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    assert oversized(ast.parse(f"def f():\n{body}\n")) == [f"f ({MAX_FUNCTION_LINES + 1} lines)"]
    assert oversized(ast.parse(f"def f():\n{body[: body.rindex(chr(10))]}\n")) == []


def test_no_class_or_function_of_the_package_is_too_long():
    """A class that checks and does everything, or a function over a screenful, hides steps that deserve a name.
    The benchmarks package (orchestration, not installed) follows the same rule."""
    files = {**MODULES, **{f"benchmarks.{f.stem}": f for f in (REPO / "benchmarks").glob("*.py")}}
    long = {name: oversized(ast.parse(f.read_text())) for name, f in files.items()}
    long = {name: found for name, found in long.items() if found}
    assert not long, f"split these (classes <= {MAX_CLASS_LINES}, functions <= {MAX_FUNCTION_LINES} lines): {long}"


def test_the_tests_mirror_the_subpackages():
    """Each subpackage's tests live in a folder of the same name (tests/synthesis/ tests synthesis/, ...)."""
    names = {m.split(".")[1] for m, f in MODULES.items() if f.name == "__init__.py" and m.count(".") == 1}
    names -= {
        "trainers",
        "entrypoints",
    }  # the -tr modules and the console scripts run end to end (tests/training/, ...)
    missing = sorted(n for n in names if not list((REPO / "tests" / n).glob("test_*.py")))
    assert not missing, f"no tests/<name>/test_*.py for the subpackages {missing}"
