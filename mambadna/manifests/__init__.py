"""Manifests: the lists of files the package works on. Torch-free.

- ``genomes.py``: genome manifests of real data (``data_manifests/*.yaml``: URLs, checksums,
  labels, splits, licences): ``load_manifest``, and ``write_splits`` to cut fetched genomes into
  per-split FASTA files;
- ``fetch.py``: ``fetch_manifest``, resumable and verified downloads of a genome manifest;
- ``labelled.py``: the TSV manifest of labelled files (``path  label  [split]``) that finetune,
  evaluate and ``baseline fit`` read and that ``simulate`` and ``data split`` write:
  ``read_manifest``, ``ManifestRow``.

Every manifest is checked before any work, and its errors name the manifest's line.
"""

from mambadna.manifests.fetch import FetchOptions, FetchResult, fetch_manifest
from mambadna.manifests.genomes import (
    COMPRESSIONS,
    FIELDS,
    SCHEMA_VERSION,
    SPLITS,
    TOP_FIELDS,
    Checksum,
    DataManifest,
    ManifestEntry,
    SplitFiles,
    load_manifest,
    write_splits,
)
from mambadna.manifests.labelled import ManifestRow, labels_in_order, read_manifest

__all__ = ["COMPRESSIONS", "FIELDS", "SCHEMA_VERSION", "SPLITS", "TOP_FIELDS", "Checksum",
           "DataManifest", "FetchOptions", "FetchResult", "ManifestEntry", "ManifestRow",
           "SplitFiles", "fetch_manifest", "labels_in_order", "load_manifest", "read_manifest",
           "write_splits"]
