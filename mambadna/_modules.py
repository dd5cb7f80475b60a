"""Module plumbing shared by the packages: lazy public names and deprecated module paths.

``lazy_exports`` gives a package the PEP 562 ``__getattr__`` / ``__dir__`` pair that imports a
public name's module on first access, so ``import mambadna`` (and the CLI) stay fast and
torch-free until a name is used::

    __getattr__, __dir__ = lazy_exports(__name__, {"TokenStore": "mambadna.data.store"})

``deprecated_alias`` makes an old module path (a file left behind by a rename) the new module
itself, with a DeprecationWarning naming the new path. Imports nothing of mambadna.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Callable, Mapping

REMOVED_IN = "0.2"
"""The release that drops the deprecated module paths."""


def lazy_exports(package: str, names: Mapping[str, str | tuple[str, str]],
                 ) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: name -> module (same attribute name) or
    name -> (module, attribute). A resolved value is cached in the package's namespace."""
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str):
        try:
            target = names[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        module, attribute = (target, name) if isinstance(target, str) else target
        value = getattr(importlib.import_module(module), attribute)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(namespace.get("__all__", names))

    return __getattr__, __dir__


def deprecated_alias(old: str, new: str) -> None:
    """Make module ``old`` (being imported) an alias of module ``new``; warn at each first
    import. Call it as the whole body of the old file: ``deprecated_alias(__name__, "...")``."""
    warnings.warn(f"{old} is deprecated and will be removed in mambadna {REMOVED_IN}; "
                  f"import {new} instead", DeprecationWarning, stacklevel=3)
    sys.modules[old] = importlib.import_module(new)
