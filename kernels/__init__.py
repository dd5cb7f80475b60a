"""Hardware-aware kernels, imported as ``mambadna.kernels`` (see kernels/README.md)."""
