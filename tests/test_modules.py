"""Module plumbing: lazy public names of the packages, and the old module paths of renamed
modules (deprecated aliases for one release: the alias is the new module itself)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

OLD_PATHS = {
    "mambadna.fetch": "mambadna.manifests.fetch",
    "mambadna.data.manifest": "mambadna.manifests.labelled",
    "mambadna.data.windows": "mambadna.data.sampling",
    "mambadna.pipelines.windows": "mambadna.pipelines.tiling",
    "mambadna.pipelines.common": "mambadna.pipelines.run",
}


@pytest.mark.parametrize("old", sorted(OLD_PATHS))
def test_old_module_paths_warn_and_are_the_new_modules(old):
    new = OLD_PATHS[old]
    sys.modules.pop(old, None)  # an earlier import would not warn again
    with pytest.warns(DeprecationWarning, match=new.replace(".", r"\.")):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)


def test_old_names_still_import():
    with pytest.warns(DeprecationWarning):
        sys.modules.pop("mambadna.pipelines.common", None)
        from mambadna.pipelines.common import RunOptions
    from mambadna.pipelines import RunOptions as current

    assert RunOptions is current


@pytest.mark.parametrize("package, name, module", [
    ("mambadna", "read_records", "mambadna.io"),
    ("mambadna", "load_manifest", "mambadna.manifests.genomes"),
    ("mambadna", "fetch_manifest", "mambadna.manifests.fetch"),
    ("mambadna.data", "read_manifest", "mambadna.manifests.labelled"),
    ("mambadna.data", "WindowSampler", "mambadna.data.sampling"),
    ("mambadna.train", "PretrainConfig", "mambadna.train.config"),
])
def test_lazy_names_resolve_to_their_modules(package, name, module):
    value = getattr(importlib.import_module(package), name)
    assert value is getattr(importlib.import_module(module), name)
    assert name in dir(importlib.import_module(package))


def test_lazy_names_do_not_import_until_used():
    code = ("import sys, mambadna, mambadna.data, mambadna.train\n"
            "assert 'mambadna.train.run' not in sys.modules\n"
            "assert 'mambadna.data.datasets' not in sys.modules\n"
            "try:\n"
            "    mambadna.no_such_name\n"
            "except AttributeError as err:\n"
            "    print(err)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "module 'mambadna' has no attribute 'no_such_name'" in proc.stdout
