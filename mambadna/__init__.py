"""mambadna: Mamba (selective state-space) models for long DNA sequences.

The public API is imported lazily so that ``import mambadna`` stays fast and torch-free until a
model is needed::

    import mambadna as md
    md.tokenize("ACGTN")                 # np.ndarray[uint8]
    for record in md.read_records("genome.fa.gz"): ...
    model = md.load_model("run/model")
"""

from __future__ import annotations

from mambadna._modules import lazy_exports
from mambadna._version import __version__

# name -> (module, attribute); resolved on first access.
_LAZY = {
    "tokenize": ("mambadna.alphabet", "encode"),
    "decode": ("mambadna.alphabet", "decode"),
    "reverse_complement": ("mambadna.alphabet", "reverse_complement"),
    "read_records": ("mambadna.io", "read_records"),
    "read_tokens": ("mambadna.io", "read_tokens"),
    "fetch_interval": ("mambadna.io", "fetch_interval"),
    "Region": ("mambadna.regions", "Region"),
    "retain_freed_memory": ("mambadna.allocator", "retain_freed_memory"),
    "parse_region": ("mambadna.regions", "parse_region"),
    "format_region": ("mambadna.regions", "format_region"),
    "TokenStore": ("mambadna.data.store", "TokenStore"),
    "write_token_store": ("mambadna.data.store", "write_token_store"),
    "load_model": ("mambadna.model", "load_model"),
    "ModelConfig": ("mambadna.model", "ModelConfig"),
    "MambaDNA": ("mambadna.model", "MambaDNA"),
    "ModelState": ("mambadna.model", "ModelState"),
    "simulate_species": ("mambadna.simulate", "simulate_species"),
    "load_manifest": ("mambadna.manifests", "load_manifest"),
    "fetch_manifest": ("mambadna.manifests.fetch", "fetch_manifest"),
    "pretrain": ("mambadna.train", "pretrain"),
    "finetune": ("mambadna.train", "finetune"),
    "PretrainConfig": ("mambadna.train", "PretrainConfig"),
    "FinetuneConfig": ("mambadna.train", "FinetuneConfig"),
    "classify": ("mambadna.pipelines", "classify"),
    "embed": ("mambadna.pipelines", "embed"),
    "read_embeddings": ("mambadna.pipelines", "read_embeddings"),
    "evaluate": ("mambadna.pipelines.evaluate", "evaluate"),
    "score_variants": ("mambadna.pipelines.variants", "score_variants"),
    "KmerNaiveBayes": ("mambadna.baselines", "KmerNaiveBayes"),
    "fit_kmer_baseline": ("mambadna.baselines", "fit_kmer_baseline"),
}

__all__ = ["__version__", *_LAZY]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
