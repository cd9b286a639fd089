"""Packaging: the metadata a package index shows, the licence files, the ``py.typed`` marker, and a
public namespace with nothing private in it.

The metadata checks read the *installed* distribution (``importlib.metadata``), which exists when the
suite runs after ``pip install .`` as in CI; from a bare source checkout they skip, saying so.
"""

from __future__ import annotations

import importlib.metadata as metadata
import types
from pathlib import Path

import pytest

import minidiff as md

ROOT = Path(__file__).resolve().parents[1]


def _installed():
    try:
        return metadata.distribution("minidiff")
    except metadata.PackageNotFoundError:
        pytest.skip("minidiff is not installed (run `pip install .` first); metadata comes from the install")


def test_metadata_has_license_authors_and_classifiers():
    meta = _installed().metadata
    assert meta["License-Expression"] == "MIT AND CC-BY-4.0"
    assert set(meta.get_all("License-File")) == {"LICENSE", "minidiff/data/LICENSE-digits.txt"}
    assert meta["Author"] == "The minidiff developers"
    classifiers = meta.get_all("Classifier")
    assert "Typing :: Typed" in classifiers
    assert "Programming Language :: Python :: 3.10" in classifiers
    assert not any(c.startswith("License ::") for c in classifiers), "the licence is the SPDX expression"


def test_installed_files_include_marker_licences_and_data():
    files = {str(f) for f in _installed().files}
    assert "minidiff/py.typed" in files
    assert "minidiff/data/digits.csv.gz" in files
    assert any(f == "LICENSE" or f.endswith("licenses/LICENSE") for f in files)  # an egg-info or a wheel


def test_source_tree_has_license_and_marker():
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert (ROOT / "minidiff" / "py.typed").exists()


def _own_module(value) -> bool:
    return isinstance(value, types.ModuleType) and value.__name__.startswith("minidiff.")


def test_public_namespace_has_nothing_private():
    public = set(md.__all__)
    assert len(public) == len(md.__all__), "a name listed twice in md.__all__"
    assert all(not name.startswith("_") for name in public)
    assert "annotations" not in dir(md) and "annotations" not in public
    # a name without an underscore is public API, or one of minidiff's own submodules (md.modes...)
    leaked = {
        n for n in dir(md) if not n.startswith("_") and n not in public and not _own_module(getattr(md, n))
    }
    assert not leaked, f"names in dir(md) that are neither public API nor a submodule: {sorted(leaked)}"
    for name in public:
        assert hasattr(md, name), name


def test_star_import_gives_the_public_api():
    namespace: dict = {}
    exec("from minidiff import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(md.__all__)
    assert "curvature" in dir(md)  # loaded on first use, listed all the same


def test_every_public_function_has_a_docstring():
    missing = [n for n in md.__all__ if callable(getattr(md, n)) and not getattr(md, n).__doc__]
    assert not missing, f"public callables without a docstring: {missing}"
