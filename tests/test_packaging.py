"""Packaging: the extras and markers of pyproject.toml, the licence, the optional dependencies
(msprime, triton, tensorboard) missing at run time, and no private Lightning modules."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
from packaging.requirements import Requirement  # noqa: E402  (after the skip)

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _requirements(items: list[str]) -> dict[str, Requirement]:
    return {Requirement(item).name: Requirement(item) for item in items}


def test_the_licence_is_an_spdx_string_with_its_file():
    assert PYPROJECT["license"] == "Apache-2.0"
    assert PYPROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


def test_msprime_and_triton_are_extras_with_the_right_markers():
    runtime = _requirements(PYPROJECT["dependencies"])
    extras = PYPROJECT["optional-dependencies"]
    assert "msprime" not in runtime and "triton" not in runtime
    assert "msprime" in _requirements(extras["simulate"])
    assert extras["demo"] == ["mambadna[simulate]"] and "mambadna[simulate]" in extras["dev"]
    for extra in ("gpu", "dev"):
        triton = _requirements(extras[extra])["triton"]
        assert triton.marker is not None
        assert triton.marker.evaluate({"platform_system": "Linux"})
        assert not triton.marker.evaluate({"platform_system": "Darwin"})
    assert "tensorboard" in _requirements(extras["tensorboard"])
    # make demo and make test install the simulation extra
    assert re.search(r'pip install .*-e "\.\[[^]]*demo[^]]*\]"', (ROOT / "Makefile").read_text())


def test_lightning_has_a_tested_range_that_holds_the_installed_version():
    from importlib.metadata import version

    lightning = _requirements(PYPROJECT["dependencies"])["lightning"]
    assert any(spec.operator == "<" for spec in lightning.specifier)  # an upper bound
    assert lightning.specifier.contains(version("lightning"))


def test_no_private_lightning_modules_are_imported():
    private = re.compile(r"lightning[\w.]*\._")  # lightning.pytorch.x._private, anywhere
    offenders = [str(path.relative_to(ROOT))
                 for folder in ("mambadna", "kernels", "benchmarks")
                 for path in (ROOT / folder).rglob("*.py")
                 if private.search(path.read_text())]
    assert offenders == []


def _run_without(modules: list[str], code: str, tmp_path) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter where importing any of ``modules`` fails."""
    block = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules)
    return subprocess.run([sys.executable, "-c", block + code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)


def test_simulate_without_msprime_names_the_extra(tmp_path):
    out = tmp_path / "sim"
    result = _run_without(["msprime"], "from mambadna.cli import main\nsys.argv = "
                          f"['mambadna', 'simulate', '-o', {str(out)!r}, '--length', '20000']\n"
                          "main()", tmp_path)
    assert result.returncode == 1, result.stderr
    assert "needs msprime" in result.stderr and "pip install 'mambadna[simulate]'" in \
        result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_the_model_runs_and_trains_on_cpu_without_triton(tmp_path):
    code = """
import torch
from mambadna.model import MambaDNA, ModelConfig
torch.manual_seed(0)
model = MambaDNA(ModelConfig.from_preset("tiny"))
tokens = torch.randint(5, 9, (2, 40))
out = model(tokens)
logits = out if torch.is_tensor(out) else out[0]
logits.float().sum().backward()
mixer = [p for n, p in model.named_parameters() if "mixer" in n]
assert mixer and all(p.grad is not None and torch.isfinite(p.grad).all() for p in mixer)
assert "triton" not in {name for name, mod in sys.modules.items() if mod is not None}
print("ok", tuple(logits.shape))
"""
    result = _run_without(["triton", "triton.language"], code, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ok")


def test_the_readme_opens_the_cli_with_a_table_and_its_pretrain_example_is_short():
    from mambadna.cli import cli

    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Command line", 1)[1]
    assert section.lstrip().startswith("| I want to ... | command |")
    table = section.split("\n\n", 2)[1]
    named = set(re.findall(r"`mambadna ([a-z-]+)", table))
    assert named and named <= set(cli.commands), named - set(cli.commands)
    pretrain = re.search(r"mambadna pretrain .*(?:\n(?!mambadna).*)*", section).group(0)
    steps = int(re.search(r"--max-steps (\d+)", pretrain).group(1))
    assert steps <= 200  # minutes on a CPU, not the 2000 steps of the default
    assert "mambadna data split" in section and "`data split`" in section
