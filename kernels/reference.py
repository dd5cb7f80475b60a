"""Deprecated alias (removed in mambadna 0.2): use ``mambadna.kernels.selective_scan.naive``."""

from mambadna.kernels._deprecated import alias

alias(__name__, "mambadna.kernels.selective_scan.naive")
