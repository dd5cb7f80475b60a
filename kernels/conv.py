"""Deprecated alias (removed in mambadna 0.2): use ``mambadna.kernels.conv1d.ops``."""

from mambadna.kernels._deprecated import alias

alias(__name__, "mambadna.kernels.conv1d.ops")
