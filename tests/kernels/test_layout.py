"""The kernels as an op library: public names, op folders, deprecated old paths, the wheel."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Old module paths (before the op folders) -> the modules they are now; removed in 0.2.
OLD_PATHS = {
    "mambadna.kernels.reference": "mambadna.kernels.selective_scan.naive",
    "mambadna.kernels.step": "mambadna.kernels.selective_scan.step",
    "mambadna.kernels.conv": "mambadna.kernels.conv1d.ops",
    "mambadna.kernels.triton_scan": "mambadna.kernels.selective_scan.triton",
}


def test_public_names_and_op_folders():
    import mambadna.kernels as kernels
    from mambadna.kernels import selective_scan
    from mambadna.kernels.selective_scan import naive, ops, step

    assert callable(selective_scan) and selective_scan is ops.selective_scan
    for name in kernels.__all__:
        assert getattr(kernels, name) is not None, name
    assert kernels.selective_scan_chunked is naive.selective_scan_chunked
    assert kernels.selective_state_update is step.selective_state_update
    # Importing a module of the folder must not turn the function's name into the folder.
    importlib.import_module("mambadna.kernels.selective_scan.naive")
    assert kernels.selective_scan is ops.selective_scan


@pytest.mark.parametrize("old", sorted(OLD_PATHS))
def test_old_module_paths_warn_and_are_the_new_modules(old):
    if old.endswith("triton_scan"):
        pytest.importorskip("triton")
    new = OLD_PATHS[old]
    sys.modules.pop(old, None)  # an earlier import would not warn again
    with pytest.warns(DeprecationWarning, match=new.replace(".", r"\.")):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)


def test_wheel_holds_every_op_folder_and_no_benchmarks():
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"]["mambadna.kernels"] == "kernels"
    packages = set(config["packages"])
    folders = {f"mambadna.kernels.{init.parent.name}"
               for init in (ROOT / "kernels").glob("*/__init__.py")}
    assert folders and folders <= packages, folders - packages
    assert not any(p.split(".")[0] in ("benchmarks", "tests", "docs") for p in packages)
    assert not (ROOT / "benchmarks" / "__init__.py").exists()
