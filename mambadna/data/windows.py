"""Deprecated alias (removed in mambadna 0.2): use ``mambadna.data.sampling``."""

from mambadna._modules import deprecated_alias

deprecated_alias(__name__, "mambadna.data.sampling")
