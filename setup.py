"""Build hook for the compiled parts (plain C, optional): the CPU selective-scan and causal-conv
kernels and the FASTQ block parser.

Everything else is declared in pyproject.toml. The extensions are optional: where no C compiler is
found, or the build fails (for example an exotic platform), the install goes on and the scan
falls back to the chunked PyTorch path (mambadna.kernels.selective_scan.cpu says which is used),
the convolution to F.conv1d and the FASTQ reader to its Python block parser.
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
        ),
        Extension(
            "mambadna.kernels.conv1d._cpu_conv",
            sources=["kernels/conv1d/_cpu_conv.c"],
            extra_compile_args=ARGS,
            libraries=[] if sys.platform == "win32" else ["m"],
            optional=True,
        ),
        # The FASTQ reader's block parser in C (mambadna/io/fastq.py falls back to Python).
        Extension(
            "mambadna.io._fastq",
            sources=["mambadna/io/_fastq.c"],
            extra_compile_args=["/O2"] if sys.platform == "win32" else ["-O3", "-std=c99"],
            optional=True,
        ),
    ],
)
