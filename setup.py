"""Build hook for the one compiled part: the CPU selective-scan kernel (plain C, optional).

Everything else is declared in pyproject.toml. The extension is optional: where no C compiler is
found, or the build fails (for example an exotic platform), the install goes on and the scan
falls back to the chunked PyTorch path (mambadna.kernels.selective_scan.cpu says which is used).
"""

import sys

from setuptools import Extension, setup

# -ffast-math lets GCC call glibc's vectorised expf and reassociate the sum over states; the
# kernel is checked against the fp64 reference in tests/kernels/test_cpu_scan.py.
# -fopenmp-simd honours the kernel's `omp simd` loops without linking an OpenMP runtime (torch
# brings its own; two in one process fight over threads).
ARGS = ["-O3", "-ffast-math", "-fopenmp-simd", "-std=c99"]
if sys.platform == "win32":
    ARGS = ["/O2", "/fp:fast"]

setup(
    ext_modules=[
        Extension(
            "mambadna.kernels.selective_scan._cpu_scan",
            sources=["kernels/selective_scan/_cpu_scan.c"],
            extra_compile_args=ARGS,
            libraries=[] if sys.platform == "win32" else ["m"],
            optional=True,
        )
    ],
)
