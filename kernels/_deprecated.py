"""Old module paths of the kernels, kept for one release (0.1.x) after the move to op folders.

Each old module (``kernels/reference.py`` ...) calls ``alias`` and is then the new module itself
in ``sys.modules``, so ``mambadna.kernels.triton_scan.set_config`` and every other name reach
the one implementation, with a DeprecationWarning naming the new path.
"""

from __future__ import annotations

import importlib
import sys
import warnings

REMOVED_IN = "0.2"


def alias(old: str, new: str) -> None:
    """Make module ``old`` (being imported) an alias of ``new``; warn once per import."""
    warnings.warn(f"{old} is deprecated and will be removed in mambadna {REMOVED_IN}; "
                  f"import {new} instead", DeprecationWarning, stacklevel=3)
    sys.modules[old] = importlib.import_module(new)
