"""The layer diagram holds: every import in the library — at module level and inside functions — points
down the diagram or within a layer, never up; no import circle joins two layers; and only the modules
named in ``NUMPY_ALLOWED`` / ``SCIPY_ALLOWED`` import NumPy, CuPy or SciPy (everything else asks the
backend for its array module).

The diagram (README, "Layers"), lowest first::

    backend, errors                      0
    tensor/                              1   what a tensor is; kernels; pytrees
    primitives/                          2   rules, creation, ops, md.linalg, NumPy protocols
    modes/                               3   levels, dual numbers, tape, vmap, tensor methods
    transforms/                          4   jvp, vjp, grad, ..., forward gradients
    nn optim curvature deer data testing 5   the methods built on the transforms
    minidiff (the package's __init__)    6   the public facade, ``import minidiff as md``
    bench/ cli __main__                  7   the measurement lab and the command line, on the facade
"""

from __future__ import annotations

import ast
import pathlib

import pytest

import minidiff

ROOT = pathlib.Path(minidiff.__file__).parent

LAYERS = {
    "minidiff.backend": 0,
    "minidiff.errors": 0,
    "minidiff.tensor": 1,
    "minidiff.primitives": 2,
    "minidiff.modes": 3,
    "minidiff.transforms": 4,
    **dict.fromkeys(
        [
            "minidiff.nn",
            "minidiff.optim",
            "minidiff.curvature",
            "minidiff.deer",
            "minidiff.data",
            "minidiff.testing",
        ],
        5,
    ),
    "minidiff": 6,
    "minidiff.bench": 7,
    "minidiff.cli": 7,
    "minidiff.__main__": 7,  # python -m minidiff: the command line
}

#: Who may import NumPy or CuPy directly: the backend, and host-side parsing of data files.
NUMPY_ALLOWED = {
    "minidiff.backend",
    "minidiff.data.idx",
    "minidiff.data.digits",
    # `minidiff bench peers`: the workers that run another library (each in its own process) read the
    # .npy inputs with NumPy, as that library's users do; imported inside the worker's handle() only,
    # and nothing in minidiff imports these modules (minidiff's own worker reads through the backend).
    "minidiff.bench.workers.torch_worker",
    "minidiff.bench.workers.jax_worker",
    "minidiff.bench.workers.autograd_worker",
}
#: Who may import SciPy: the backend (linear algebra), SciPy's LinearOperator interop, and the lab's
#: reference solver and environment record.
SCIPY_ALLOWED = {
    "minidiff.backend",
    "minidiff.curvature.operators",
    "minidiff.bench.deer_ode_bench",
    "minidiff.bench.environment",
}


def module_name(path: pathlib.Path) -> str:
    parts = ("minidiff",) + path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def layer(module: str) -> int:
    """The layer of a library module: its longest prefix in ``LAYERS``."""
    parts = module.split(".")
    for k in range(len(parts), 0, -1):
        prefix = ".".join(parts[:k])
        if prefix in LAYERS:
            return LAYERS[prefix]
    raise KeyError(f"{module} is in no layer: add it to LAYERS (and to the README's diagram)")


def imports(module: str):
    """``(line, imported module)`` for every import in ``module``, wherever it is written."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    type_checking_only = _type_checking_only(tree)
    for node in ast.walk(tree):
        if node in type_checking_only:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for alias in node.names:  # `from package import submodule` imports the submodule
                sub = f"{target}.{alias.name}"
                yield node.lineno, sub if sub in MODULES else target


def _type_checking_only(tree) -> set:
    """The imports under ``if TYPE_CHECKING:``: read by type checkers, never run, so neither an upward
    arrow nor part of a circle at run time (``tensor/core.py`` names the methods attached to Tensor)."""
    guarded = [n for n in ast.walk(tree) if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING"]
    return {sub for n in guarded for stmt in n.body for sub in ast.walk(stmt)}


def test_every_module_is_in_a_layer():
    for module in MODULES:
        layer(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_never_climb_the_diagram(module):
    mine = layer(module)
    climbing = [
        f"{module}:{line} imports {target} (layer {layer(target)} > {mine})"
        for line, target in imports(module)
        if target.split(".")[0] == "minidiff" and layer(target) > mine
    ]
    assert not climbing, "\n".join(climbing)


def test_no_import_circle_between_modules_of_the_engine():
    """Below the methods (layers 0–4), module-level imports form no cycle at all."""
    graph = {}
    for module in MODULES:
        if layer(module) <= 4:
            tree = ast.parse(MODULES[module].read_text())
            top = {n.lineno for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))}
            graph[module] = {t for line, t in imports(module) if line in top and t in MODULES and t != module}
    state: dict = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in graph.get(node, ()):
            if state.get(nxt) == "open":
                raise AssertionError("import circle: " + " -> ".join(path[path.index(nxt) :] + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for module in graph:
        if module not in state:
            visit(module, [module])


@pytest.mark.parametrize("module", sorted(MODULES))
def test_only_the_backend_and_data_files_import_numpy(module):
    for line, target in imports(module):
        root = target.split(".")[0]
        if root in ("numpy", "cupy", "cupyx"):
            assert module in NUMPY_ALLOWED, f"{module}:{line} imports {target}; ask minidiff.backend instead"
        if root == "scipy":
            assert module in SCIPY_ALLOWED, f"{module}:{line} imports {target}; ask minidiff.backend instead"


def test_the_checker_sees_a_climbing_import(tmp_path, monkeypatch):
    """Test the test: an upward import written inside a function of a low layer is reported."""
    fake = ROOT / "tensor" / "core.py"
    text = fake.read_text() + "\n\ndef _sneaky():\n    from ..modes import reverse\n"
    copy = tmp_path / "core.py"
    copy.write_text(text)
    monkeypatch.setitem(MODULES, "minidiff.tensor.core", copy)
    with pytest.raises(AssertionError, match=r"imports minidiff.modes.reverse \(layer 3 > 1\)"):
        test_imports_never_climb_the_diagram("minidiff.tensor.core")


def test_above_the_engine_nothing_names_a_tensors_array():
    """Upper layers use the public API: no ``_data``, no ``xp``, no ``wrap`` (see md.array_kernel)."""
    import re

    offenders = []
    for module, path in MODULES.items():
        if layer(module) >= 5:
            for k, text in enumerate(path.read_text().splitlines(), 1):
                if re.search(r"\._data\b|\bxp\b|\bwrap\(", text):
                    offenders.append(f"{module}:{k}: {text.strip()}")
    assert not offenders, "\n".join(offenders)
