"""Pipelines over whole inputs: species classification and genome embeddings.

Plain functions usable from Python; the ``mambadna classify`` and ``mambadna embed`` commands
only parse options and call them::

    import mambadna as md
    table = md.classify("run/model", ["sample.fa"])              # pandas DataFrame
    md.embed("run/model", ["genome.fa"], "genome.parquet")       # Parquet, one row per window

Options and run set-up: ``mambadna.pipelines.run``; windows: ``mambadna.pipelines.tiling``;
streaming and batching: ``mambadna.pipelines.inference``; several GPUs:
``mambadna.pipelines.parallel`` (called by classify and embed, never calling them).
"""

from mambadna.pipelines.classify import classify
from mambadna.pipelines.embed import embed, read_embeddings
from mambadna.pipelines.run import RunOptions
from mambadna.pipelines.tiling import DEFAULT_WINDOW, WindowSpec, windows

__all__ = ["DEFAULT_WINDOW", "RunOptions", "WindowSpec", "classify", "embed",
           "read_embeddings", "windows"]
