"""The package's layers (docs/architecture.md): every import of mambadna/ and kernels/ goes down
the layer table below, no modules import each other (directly or around a circle), and the
modules that promise it stay torch-free.

The imports are read from the source (ast), not from a running interpreter, so every import
counts: module-level ones and the lazy ones inside functions. A lazy import is still a
dependency (it runs whenever its function does, and a call path goes through it); lazy imports
exist to keep ``import mambadna`` and the CLI fast and torch-free, not to hide a cycle or an
upward import, so both rules apply to them. Only imports under ``if TYPE_CHECKING:`` are left
out: they never run (annotations only).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A unit is a top-level module or subpackage of mambadna ("kernels" is the kernels/ folder,
# imported as mambadna.kernels; "mambadna" is the package's own __init__). Imports inside a
# unit are free (but must not form a cycle); across units only these are allowed.
BASE = {"_version", "errors", "_modules", "progress"}  # plumbing every layer may use
LAYERS: dict[str, tuple[set[str], str]] = {
    # unit: (units it may import, why), bottom layer first
    "_version": (set(), "the version string: imports nothing"),
    "errors": (set(), "the domain errors every layer raises: imports nothing"),
    "_modules": (set(), "lazy package names, deprecated module paths: imports nothing"),
    "progress": (set(), "progress bars (tqdm) on stderr: imports nothing of mambadna"),
    "allocator": (set(), "glibc malloc settings of a process (mallopt): imports nothing"),
    "alphabet": ({"_version", "errors"}, "tokens: torch-free, under everything that reads DNA"),
    "atomic": ({"_version", "errors"}, "atomic files and folders: under every writer"),
    "regions": ({"_version", "errors"},
                "the name:start-end notation (samtools'), parsed and printed in one place"),
    "io": ({*BASE, "alphabet", "regions", "atomic"},
           "readers: torch-free, know nothing of stores or models; rebuilt indexes are atomic"),
    "plots": ({*BASE, "atomic"}, "figures (matplotlib, Agg): training curves, confusion"),
    "kernels": (set(), "the ops (context parallelism included: torch.distributed only): "
                       "import nothing of mambadna, so they can be vendored"),
    "manifests": ({*BASE, "atomic", "io"},
                  "lists of files (genome YAML, labelled TSV) and their downloads"),
    "model": ({*BASE, "alphabet", "atomic", "kernels"},
              "the network over the ops: neither train nor data"),
    "data": ({*BASE, "alphabet", "atomic", "io", "manifests"},
             "token stores, samplers, datasets: never the model"),
    "simulate": ({*BASE, "atomic", "regions"},
                 "simulated genomes: numpy and msprime only (split records named as regions)"),
    "baselines": ({*BASE, "alphabet", "atomic", "io", "manifests", "data"},
                  "the k-mer baseline: samples windows as finetuning does (data), no model"),
    "train": ({*BASE, "alphabet", "atomic", "io", "manifests", "data", "model"},
              "Lightning training over data and model"),
    "pipelines": ({*BASE, "alphabet", "atomic", "io", "manifests", "model", "baselines",
                   "plots"},
                  "classify, embed, evaluate with trained models: never train"),
    "experiments": ({*BASE, "atomic", "io", "manifests", "simulate", "train", "pipelines",
                     "plots"},
                    "studies that chain simulate, train and pipelines"),
    "demo": ({*BASE, "atomic", "simulate", "train", "pipelines", "plots"},
             "the embedded end-to-end demo"),
    "bench": ({*BASE, "atomic", "data", "kernels", "model", "pipelines"},
              "`mambadna bench`: end-to-end throughput over library calls (the scan stage "
              "times the public op alone)"),
    "cli": ({*BASE, "allocator", "io", "manifests", "data", "simulate", "baselines", "train",
             "pipelines", "experiments", "demo", "bench", "plots"},
            "the shell: options -> one library call; nothing imports it"),
    "__main__": ({"cli"}, "`python -m mambadna` runs the CLI"),
    "mambadna": (BASE, "the package root: public names resolved lazily, by name"),
    "fetch": (BASE, "deprecated alias of mambadna.manifests.fetch (removed in 0.2)"),
}

TORCH_FREE = [
    "mambadna", "mambadna.cli", "mambadna.alphabet", "mambadna.errors", "mambadna.atomic",
    "mambadna.regions", "mambadna.progress", "mambadna.plots", "mambadna.allocator",
    "mambadna.io", "mambadna.io.validate", "mambadna.manifests", "mambadna.data.store",
    "mambadna.data.sampling", "mambadna.baselines", "mambadna.train.config",
    "mambadna.train.command", "mambadna.experiments.command",
]
"""Modules whose import must not load torch: io and the alphabet (docs/architecture.md), the package
root and the CLI (fast start), and what their docstrings promise."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] == "kernels":
        parts.insert(0, "mambadna")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for folder in ("mambadna", "kernels")
           for p in sorted((ROOT / folder).rglob("*.py"))}
# Compiled extensions (their C sources, built by setup.py) import nothing: leaves of the graph.
EXTENSIONS = {_module_name(p.with_suffix(".py")) for folder in ("mambadna", "kernels")
              for p in sorted((ROOT / folder).rglob("*.c"))}


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Import nodes of ``tree``, at any depth, except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _resolve(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The mambadna modules ``node`` (in ``module``) imports: for ``from X import y``, X.y if it
    is a module, else X."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module if MODULES[module].name == "__init__.py" else \
                module.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{base}".rstrip(".")
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                 for alias in node.names]
    out = []
    for name in names:
        if name in EXTENSIONS:
            continue
        while name and name not in MODULES:  # `import mambadna.io.files` -> the module
            name = name.rpartition(".")[0]
        if name.startswith("mambadna") and name != module:
            out.append(name)
    return out


def _graph() -> dict[str, dict[str, int]]:
    """module -> {imported module: first line}."""
    graph: dict[str, dict[str, int]] = defaultdict(dict)
    for module, path in MODULES.items():
        for node in _imports(ast.parse(path.read_text(), str(path))):
            for target in _resolve(module, node):
                graph[module].setdefault(target, node.lineno)
    return graph


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    for start in sorted(MODULES):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, {}))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, {})))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_the_walker_sees_lazy_imports_and_skips_type_checking():
    graph = _graph()
    assert "mambadna.model.save" in graph["mambadna.model.network"]  # inside a method
    assert "mambadna.model.network" not in graph["mambadna.model.save"]  # TYPE_CHECKING only
    assert "mambadna.kernels" in graph["mambadna.model.mixer"]  # kernels/ is mambadna.kernels


def test_every_unit_has_a_place_in_the_table():
    units = {_unit(m) for m in MODULES}
    assert units == set(LAYERS), ("place new units in LAYERS (and docs/architecture.md): "
                                  f"{sorted(units - set(LAYERS))}; gone: "
                                  f"{sorted(set(LAYERS) - units)}")
    for unit, (allowed, reason) in LAYERS.items():
        assert allowed <= set(LAYERS) and unit not in allowed and reason, unit


def test_the_table_is_a_layering():
    """The allowed imports between units have no circle, so the units can be ordered."""
    remaining = dict(LAYERS)
    while remaining:
        ready = [u for u, (allowed, _) in remaining.items() if not allowed & set(remaining)]
        assert ready, f"the layer table has a circle among {sorted(remaining)}"
        for unit in ready:
            del remaining[unit]


def test_imports_follow_the_layers():
    wrong = []
    for module, targets in _graph().items():
        unit = _unit(module)
        for target, line in targets.items():
            other = _unit(target)
            if other != unit and other not in LAYERS[unit][0]:
                wrong.append(f"{MODULES[module].relative_to(ROOT)}:{line}: {module} imports "
                             f"{target} ({unit} -> {other}: not in LAYERS)")
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles():
    graph = _graph()
    cycles = _cycles(graph)
    described = []
    for members in cycles:
        edges = [f"  {a} -> {b} (line {graph[a][b]})" for a in members for b in members
                 if b in graph.get(a, {})]
        described.append("\n".join([" <-> ".join(members), *edges]))
    assert not cycles, "modules that import each other:\n" + "\n".join(described)


def test_torch_free_modules_do_not_load_torch():
    code = ("import importlib, sys\n"
            f"for name in {TORCH_FREE!r}:\n"
            "    importlib.import_module(name)\n"
            "    loaded = [m for m in ('torch', 'lightning', 'triton') if m in sys.modules]\n"
            "    assert not loaded, f'{name} loads {loaded}'\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_every_package_is_in_the_wheel():
    tomllib = pytest.importorskip("tomllib")
    packages = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                   ["packages"])
    folders = {_module_name(init) for folder in ("mambadna", "kernels")
               for init in (ROOT / folder).rglob("__init__.py")}
    assert folders == packages, (sorted(folders - packages), sorted(packages - folders))


def test_files_refer_to_nothing_outside_the_repository():
    """A clone has no design notes beside it: the repository's files point at docs/."""
    outside = ("DESIGN" + ".md", "../" + "shared")
    files = [ROOT / name for name in ("README.md", "BENCHMARKS.md", "Makefile",
                                      "pyproject.toml", ".ci/run")]
    for folder in ("mambadna", "kernels", "tests", "benchmarks", "docs", "workflows",
                   "data_manifests"):
        files += [p for p in (ROOT / folder).rglob("*") if p.is_file()
                  and p.suffix in (".py", ".md", ".yaml", ".smk", ".toml", "")]
    found = [f"{p.relative_to(ROOT)}: {word}" for p in files if p.exists()
             for word in outside if word in p.read_text(errors="ignore")]
    assert not found, found
