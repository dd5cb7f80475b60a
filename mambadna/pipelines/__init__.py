"""Pipelines over whole inputs: species classification, genome embeddings, variant scores.

Plain functions usable from Python; the ``mambadna classify`` and ``mambadna embed`` commands
only parse options and call them::

    import mambadna as md
    table = md.classify("run/model", ["sample.fa"])              # pandas DataFrame
    md.embed("run/model", ["genome.fa"], "genome.parquet")       # Parquet, one row per window
    md.score_variants("run/model", "ref.fa", "calls.vcf.gz").frame  # one row per ALT

Options and run set-up: ``mambadna.pipelines.run``; windows: ``mambadna.pipelines.tiling``;
streaming and batching: ``mambadna.pipelines.inference``; several GPUs:
``mambadna.pipelines.parallel`` (called by classify and embed, never calling them).
"""

from mambadna.pipelines.classify import classify
from mambadna.pipelines.embed import embed, read_embeddings
from mambadna.pipelines.run import RunOptions
from mambadna.pipelines.tiling import DEFAULT_WINDOW, WindowSpec, windows
from mambadna.pipelines.variants import ScoreOptions, score_variants

__all__ = ["DEFAULT_WINDOW", "RunOptions", "ScoreOptions", "WindowSpec", "classify", "embed",
           "read_embeddings", "score_variants", "windows"]
